"""A sorted multiset of (key, value) pairs of numbers, 16 bytes a pair.

Millions of held delayed messages need indexes (by the hash of their
message_id; by due time) that cost O(log n) to change and to search, in
a few bytes each: a SortedList of tuples costs over 100 B a pair. Pairs
live in chunks of two typed arrays each (keys, values), sorted by key then
value; a list of each chunk's last pair finds the chunk by bisection, and
a change moves at most one chunk's items (CHUNK of them), a bounded cost.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Any, Iterator

#: Pairs a chunk holds at most before it splits in two.
CHUNK = 2048

Pair = tuple[float, int]


class SortedPairs:
    def __init__(self, keycode: str) -> None:
        """``keycode``: the array typecode of the keys ("Q" or "d");
        values are unsigned 64-bit."""
        self._keycode = keycode
        self._keys: list[array[Any]] = []
        self._values: list[array[int]] = []
        #: The last pair of each chunk.
        self._lasts: list[Pair] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def _locate(self, key: float, value: int) -> tuple[int, int]:
        """(chunk, index in it) where the pair is or would go."""
        c = min(bisect.bisect_left(self._lasts, (key, value)), len(self._lasts) - 1)
        keys = self._keys[c]
        lo, hi = bisect.bisect_left(keys, key), bisect.bisect_right(keys, key)
        return c, bisect.bisect_left(self._values[c], value, lo, hi)

    def add(self, key: float, value: int) -> None:
        if not self._lasts:
            self._keys.append(array(self._keycode, [key]))
            self._values.append(array("Q", [value]))
            self._lasts.append((key, value))
            self._len = 1
            return
        c, i = self._locate(key, value)
        keys, values = self._keys[c], self._values[c]
        keys.insert(i, key)
        values.insert(i, value)
        self._len += 1
        if i == len(keys) - 1:
            self._lasts[c] = (key, value)
        if len(keys) > CHUNK:
            # In halves, but a pair added at the very end (due times and
            # ids mostly grow) starts a chunk of its own, so that chunks
            # filled in order stay full. Both parts are copies: an array
            # cut in place keeps its allocation (32 B a pair, not 16).
            cut = i if c == len(self._lasts) - 1 and i == len(keys) - 1 else len(keys) // 2
            self._keys[c:c + 1] = [keys[:cut], keys[cut:]]
            self._values[c:c + 1] = [values[:cut], values[cut:]]
            self._lasts.insert(c, (keys[cut - 1], values[cut - 1]))

    def remove(self, key: float, value: int) -> bool:
        """Take one such pair out; False if there is none."""
        if not self._lasts:
            return False
        c, i = self._locate(key, value)
        keys, values = self._keys[c], self._values[c]
        if i == len(keys) or keys[i] != key or values[i] != value:
            return False
        del keys[i], values[i]
        self._len -= 1
        if not keys:
            del self._keys[c], self._values[c], self._lasts[c]
        elif i == len(keys):
            self._lasts[c] = (keys[-1], values[-1])
        return True

    def __contains__(self, pair: Pair) -> bool:
        if not self._lasts:
            return False
        c, i = self._locate(*pair)
        keys, values = self._keys[c], self._values[c]
        return i < len(keys) and keys[i] == pair[0] and values[i] == pair[1]

    def from_(self, key: float, value: int = 0) -> Iterator[Pair]:
        """The pairs at or after (``key``, ``value``), in order. Not to be
        used across a change."""
        if not self._lasts:
            return
        c, i = self._locate(key, value)
        for n in range(c, len(self._keys)):
            keys, values = self._keys[n], self._values[n]
            yield from zip(keys[i:] if i else keys, values[i:] if i else values)
            i = 0

    def values_of(self, key: float) -> list[int]:
        """The values paired with ``key`` (a bisection per chunk they are
        in: no copy of the rest of the chunk, as from_ makes)."""
        found: list[int] = []
        if not self._lasts:
            return found
        c, i = self._locate(key, 0)
        for n in range(c, len(self._keys)):
            keys, values = self._keys[n], self._values[n]
            end = bisect.bisect_right(keys, key, i)
            found += values[i:end]
            if end < len(keys):
                break
            i = 0
        return found

    def clear(self) -> None:
        self._keys, self._values, self._lasts, self._len = [], [], [], 0
