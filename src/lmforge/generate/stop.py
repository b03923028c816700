"""Stop sequences matched on decoded text, so a stop string that spans token boundaries is still found."""
from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]

    def find(self, text: str) -> int | None:
        """Index where the earliest stop string starts in `text`, or None."""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def safe_prefix(self, text: str) -> str:
        """The part of `text` that can be streamed: it cannot become part of a stop string later.

        Holds back the longest tail that is a prefix of some stop string, and a trailing U+FFFD
        (half of a multi-byte character whose other bytes are still to come)."""
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:n]):
                    hold = n
                    break
        text = text[: len(text) - hold]
        return text.rstrip("\ufffd")
