"""Responsible-AI tools: PII redaction (`pii`), moderation (`moderation`), bias audits (`bias`), the green-list
watermark (`watermark`), verbatim-copy checks (`copying`), model cards (`model_card`) and the hash-chained audit
log (`audit_log`). Import the submodule you need; this package imports nothing heavy on its own."""
