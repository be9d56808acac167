"""edge_model_serving: serves quantized LiteRT (.tflite) models over HTTP (REST /v1 and KServe OIP /v2)."""

__version__ = "0.1.0"
