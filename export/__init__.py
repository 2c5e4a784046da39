"""Export: checkpoint -> SavedModel, ONNX and framework-neutral dumps; replication; serving.

Export never trains and imports only `models`. `export.dump` and `export.onnx_graph` need no
TensorFlow (the dump is readable with NumPy alone); the TensorFlow, PyTorch and ONNX Runtime
parts are imported only by the modules that use them.
"""
