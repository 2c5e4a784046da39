"""Research on quines, the top floor: lineages, fertility and spectra, surveys, the paper's
reproduction, and the population experiments to come.

It may import every wing below (`models`, `trainers`, `export`, `formats`); nothing imports it.
Its binaries are as thin as the trainers'.
"""
