"""LangGraph builders, one protocol per module; each `build()` returns an uncompiled StateGraph."""
