"""Extra detector-training templates, one module per domain (see ``specray.domains.corpus``)."""

from specray.domains.styles import chat, code, logic, maths

TEMPLATES = {"code": code.TEMPLATES, "math": maths.TEMPLATES, "logic": logic.TEMPLATES, "chat": chat.TEMPLATES}
