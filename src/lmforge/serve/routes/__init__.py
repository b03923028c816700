"""HTTP routers: they parse, authenticate and delegate (to serving.py); no logic of their own."""
