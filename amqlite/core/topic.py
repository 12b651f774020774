"""Topic-exchange routing: which destinations a routing key reaches.

Binding patterns live in a trie keyed by word, so routing one message costs
roughly the length of its key times the few wildcard branches that are
alive, not the number of bindings.  The walk is a breadth-first simulation
over *sets* of trie nodes, one step per key word: a node that several paths
reach at the same word is visited once, so patterns such as ``#.#.#.#`` (which
make naive backtracking exponential) stay cheap and no recursion is involved.

Word splitting follows RabbitMQ (``rabbit_db_topic_exchange:split_topic_key``):
``"a..b"`` is three words, ``"a."`` is two, but the empty string is *zero*
words, not one empty word.  So ``#`` and the empty pattern match the empty
routing key while ``*`` does not.
"""

from __future__ import annotations

from collections.abc import Hashable


class _Node:
    """One trie node; the edge that leads into it is the last word of a pattern prefix."""

    __slots__ = ("children", "star", "hash", "is_hash", "destinations")

    def __init__(self, is_hash: bool = False) -> None:
        self.children: dict[str, _Node] = {}
        # Wildcards get their own slots so the hot path tests them without a
        # dict lookup, and so a routing key word spelled "*" or "#" can never
        # be mistaken for a wildcard edge.
        self.star: _Node | None = None
        self.hash: _Node | None = None
        # A node entered through '#' may swallow any number of further words.
        self.is_hash = is_hash
        self.destinations: set[Hashable] = set()

    def is_empty(self) -> bool:
        return not (self.destinations or self.children or self.star or self.hash)


def _split(key: str) -> list[str]:
    # RabbitMQ treats the empty key as no words at all (see module docstring).
    return key.split(".") if key else []


class TopicMatcher:
    """The bindings of one topic exchange, as a trie of pattern words."""

    __slots__ = ("_root", "_count")

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def bind(self, pattern: str, destination: Hashable) -> None:
        """Add a binding; re-binding the same pair is a no-op, as in AMQP."""
        node = self._root
        for word in _split(pattern):
            if word == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif word == "#":
                if node.hash is None:
                    node.hash = _Node(is_hash=True)
                node = node.hash
            else:
                child = node.children.get(word)
                if child is None:
                    child = node.children[word] = _Node()
                node = child
        if destination not in node.destinations:
            node.destinations.add(destination)
            self._count += 1

    def unbind(self, pattern: str, destination: Hashable) -> bool:
        """Remove a binding, returning whether it existed.

        Nodes left with neither bindings nor children are cut off on the way
        back up, so a churn of short-lived patterns (per-client reply topics,
        say) does not grow the trie forever.
        """
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in _split(pattern):
            if word == "*":
                child = node.star
            elif word == "#":
                child = node.hash
            else:
                child = node.children.get(word)
            if child is None:
                return False
            path.append((node, word))
            node = child
        if destination not in node.destinations:
            return False
        node.destinations.discard(destination)
        self._count -= 1
        for parent, word in reversed(path):
            if not node.is_empty():
                break
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
            else:
                del parent.children[word]
            node = parent
        return True

    def match(self, routing_key: str) -> set[Hashable]:
        """Every destination whose pattern matches ``routing_key``, each once.

        ``active`` holds the nodes whose pattern prefix matches the words seen
        so far.  It is kept closed under '#' edges (a '#' may match zero words)
        and every '#' node stays active on each word (it may match more), so
        no backtracking is needed.  The child and star steps are written out
        twice rather than looped over because this is the routing hot path
        and the loop's tuple costs about a fifth of the throughput.
        """
        active = {self._root}
        hashed = self._root.hash
        while hashed is not None:
            active.add(hashed)
            hashed = hashed.hash
        for word in _split(routing_key):
            following: set[_Node] = set()
            add = following.add
            for node in active:
                if node.is_hash:
                    add(node)
                child = node.children.get(word)
                if child is not None:
                    add(child)
                    hashed = child.hash
                    while hashed is not None:
                        add(hashed)
                        hashed = hashed.hash
                child = node.star
                if child is not None:
                    add(child)
                    hashed = child.hash
                    while hashed is not None:
                        add(hashed)
                        hashed = hashed.hash
            if not following:
                return set()
            active = following
        result: set[Hashable] = set()
        for node in active:
            if node.destinations:
                result.update(node.destinations)
        return result
