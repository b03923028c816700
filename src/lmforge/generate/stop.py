"""Text from tokens as they arrive: incremental decoding, and stop sequences matched on the decoded text (so a
stop string that spans token boundaries is still found)."""
from __future__ import annotations

# A UTF-8 character has at most 4 bytes and a byte-level token at least one, so a character still cut after 4
# more tokens never completes (the model produced invalid bytes): then U+FFFD is shown as it is.
_MAX_HELD_TOKENS = 4


class IncrementalDecoder:
    """The text of a growing list of token ids, decoding a window of the last few tokens per step.

    Decoding all ids every step is quadratic in the completion's length. As vLLM's `detokenize_incrementally`
    and Hugging Face's TextStreamer do, decode the window ids[prefix:] and the part ids[prefix:read] of it that
    is already shown; the new text is the excess. Both start at the same token, so a decoder that treats a first
    token specially (sentencepiece drops its leading space) treats both alike. While the excess ends in U+FFFD
    (a multi-byte character cut between tokens) nothing is shown and the window grows until it is complete."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def push(self, token: int) -> str:
        """Append a token; return the text it completes (possibly empty)."""
        self.ids.append(token)
        return self._new(final=False)

    def flush(self) -> str:
        """At the end: the text still held back (a character cut by the end of generation shows as U+FFFD)."""
        return self._new(final=True)

    def _new(self, final: bool) -> str:
        if self.read == len(self.ids):
            return ""
        shown = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        if len(text) <= len(shown) and not final:
            return ""
        if text.endswith("\ufffd") and not final and len(self.ids) - self.read < _MAX_HELD_TOKENS:
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(shown):]


class StopMatcher:
    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]

    def find(self, text: str) -> int | None:
        """Index where the earliest stop string starts in `text`, or None."""
        if not self.stops:
            return None
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def safe_prefix(self, text: str) -> str:
        """The part of `text` that can be streamed: it cannot become part of a stop string later.

        Holds back the longest tail that is a prefix of some stop string. Whatever is held back is the only
        place a later stop string can start, so the caller searches only the text not yet shown."""
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:n]):
                    hold = n
                    break
        return text[: len(text) - hold]
