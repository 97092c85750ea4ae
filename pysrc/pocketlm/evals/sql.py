"""`pocketlm eval sql`: next-token accuracy and keystroke savings, for the model and an n-gram baseline.

next_token_acc: teacher-forced top-1 over the SQL tokens and the closing <eos> of each row.

ksr (keystroke savings rate): a simulated user types each query left to right. At every position
the model offers its greedy completion (up to 16 tokens, healed as in the product, stopping at the
stop rule). The user accepts, with one keystroke, the longest prefix of the suggestion that equals
the text still to type and ends at a word boundary, if it is at least 2 characters; otherwise types
one character. ksr = 1 - keystrokes / characters.

The model's run is native (CPython + onnxruntime). Greedy decoding stops as soon as the suggestion
stops matching the text still to type: nothing after that point can be accepted, so the figures are
those of the full 16-token suggestion, computed with fewer forward passes.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable

from ..constraints import TokenBytesIndex
from ..completer import common_prefix
from ..ngram import NgramModel
from ..tasks import sql
from .rows import read_jsonl

SUGGESTION_TOKENS = 16
MIN_ACCEPT = 2


def is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def accepted_length(suggestion: str, remaining: str) -> int:
    """Characters the simulated user accepts from `suggestion` when `remaining` is still to type.

    >>> accepted_length(" name FROM head", " name FROM heads")   # 'head' would split the word 'heads'
    11
    >>> accepted_length("x", "x y"), accepted_length("ab", "abc")
    (0, 0)
    """
    n = 0
    limit = min(len(suggestion), len(remaining))
    while n < limit and suggestion[n] == remaining[n]:
        n += 1
    for k in range(n, MIN_ACCEPT - 1, -1):  # longest prefix ending at a word boundary
        if k == len(remaining) or not (is_word_char(remaining[k - 1]) and is_word_char(remaining[k])):
            return k
    return 0


def simulate_typing(query: str, suggest: Callable[[str], str]) -> int:
    """Keystrokes the simulated user needs to type `query`, given suggest(prefix) -> completion."""
    typed, keystrokes = 0, 0
    while typed < len(query):
        take = accepted_length(suggest(query[:typed]), query[typed:]) if typed < len(query) else 0
        typed += take if take else 1
        keystrokes += 1
    return keystrokes


def cut_at_stop(text: str) -> str:
    cuts = [i for i in (text.find(s) for s in sql.STOP_STRINGS) if i >= 0]
    return text[: min(cuts)] if cuts else text


class NativeSuggester:
    """Greedy, healed suggestions from a NativeModel, reusing the schema's and prefix's KV cache."""

    def __init__(self, model, tokenizer, index: TokenBytesIndex, schema: str, finish_names: bool = True):
        import numpy as np  # CPython only: this eval runs natively

        self.np, self.model, self.tokenizer, self.index = np, model, tokenizer, index
        self.manifest = model.manifest
        self.schema, self.finish_names = schema, finish_names
        self.cache = model.new_cache()
        self.cached: list[int] = []

    def _feed(self, ids: list[int]):
        """Logits after `ids`, re-running only what differs from the cache."""
        keep = min(common_prefix(self.cached, ids), len(ids) - 1)
        self.cache.truncate(keep)
        logits = self.model.forward_all(ids[keep:], self.cache)[-1]
        self.cached = list(ids)
        return logits

    def __call__(self, prefix: str, target: str) -> str:
        tok, arch = self.manifest.tokenizer, self.manifest.architecture
        prompt = sql.build_prompt(self.tokenizer, self.schema, prefix, bos_id=tok.bos_id,
                                  max_seq_len=arch.max_seq_len, reserve=SUGGESTION_TOKENS)
        ids = prompt.ids
        goal = prompt.heal + target.encode("utf-8")
        constraint = sql.SqlNameConstraint(self.index, self.schema, prefix, prompt.heal, self.finish_names)
        produced = b""
        logits = self._feed(ids)
        for step in range(SUGGESTION_TOKENS):
            allowed = constraint.allowed()
            if allowed is None:
                token = int(self.np.argmax(logits))
            else:
                if not allowed:
                    break
                token = allowed[int(self.np.argmax(logits[allowed]))]
            if token == tok.eos_id:
                break
            constraint.advance(token)
            produced += self.tokenizer.token_bytes(token)
            common = min(len(produced), len(goal))
            if produced[:common] != goal[:common] or step == SUGGESTION_TOKENS - 1:
                break  # diverged: no later token can be accepted
            if len(ids) + 1 >= arch.max_seq_len:
                break
            ids = ids + [token]
            logits = self._feed(ids)
        text = produced[len(prompt.heal):].decode("utf-8", errors="replace") if produced.startswith(prompt.heal) else ""
        return cut_at_stop(text)


class NgramSuggester:
    def __init__(self, ngram: NgramModel, tokenizer, index: TokenBytesIndex, eos_id: int, schema: str = "",
                 finish_names: bool = True):
        self.ngram, self.tokenizer, self.index, self.eos_id = ngram, tokenizer, index, eos_id
        self.schema, self.finish_names = schema, finish_names

    def __call__(self, prefix: str, target: str) -> str:
        context, heal = sql.split_heal(self.tokenizer, prefix)
        ids = self.tokenizer.encode(context)
        heal_bytes = heal.encode("utf-8")  # split_heal has replaced lone surrogates
        constraint = sql.SqlNameConstraint(self.index, self.schema, prefix, heal_bytes, self.finish_names)
        goal, produced = heal_bytes + target.encode("utf-8"), b""
        for _ in range(SUGGESTION_TOKENS):
            allowed = constraint.allowed()
            token = self.ngram.predict(ids, None if allowed is None else set(allowed))
            if token is None or token == self.eos_id:
                break
            constraint.advance(token)
            produced += self.tokenizer.token_bytes(token)
            ids.append(token)
            common = min(len(produced), len(goal))
            if produced[:common] != goal[:common]:
                break
        text = produced[len(heal_bytes):].decode("utf-8", errors="replace") if produced.startswith(heal_bytes) else ""
        return cut_at_stop(text)


def evaluate(model, tokenizer, rows: list[dict], train_rows: Iterable[dict], progress=None,
             finish_names: bool = True) -> dict:
    """All figures for `rows` ({"schema", "sql"}); `model` is a pocketlm.native.NativeModel.

    finish_names: complete half-typed words with schema names (the product's default), for the
    model and the n-gram baseline alike.
    """
    import numpy as np

    manifest = model.manifest
    tok = manifest.tokenizer
    ngram = NgramModel()
    ngram.fit(tokenizer.encode(r["sql"]) + [tok.eos_id] for r in train_rows)
    index = TokenBytesIndex.from_tokenizer(tokenizer)
    hits = ngram_hits = targets = chars = keys = ngram_keys = 0
    for n, row in enumerate(rows):
        schema, query = row["schema"], row["sql"]
        # teacher-forced next-token accuracy over the SQL tokens and <eos>
        head = [tok.bos_id] + tokenizer.encode(sql.schema_text(schema)) + tokenizer.encode(sql.SEPARATOR)
        body = tokenizer.encode(query) + [tok.eos_id]
        over = len(head) + len(body) - manifest.architecture.max_seq_len
        if over > 0:  # the prompt's context policy: drop the schema's oldest tokens (keep <bos> and separator)
            sep = len(tokenizer.encode(sql.SEPARATOR))
            head = head[:1] + head[1 + min(over, len(head) - 1 - sep) :]
        ids = (head + body)[: manifest.architecture.max_seq_len]
        n_targets = len(ids) - len(head)
        if n_targets > 0:
            cache = model.new_cache()
            logits = model.forward_all(ids, cache)  # [S, vocab]
            predicted = np.argmax(logits[len(head) - 1 : len(ids) - 1], axis=-1)
            hits += int((predicted == np.array(ids[len(head):])).sum())
            for i in range(n_targets):
                context = body[:i]
                ngram_hits += int(ngram.predict(context) == body[i])
            targets += n_targets
        # keystroke savings
        suggester = NativeSuggester(model, tokenizer, index, schema, finish_names)
        ngram_suggest = NgramSuggester(ngram, tokenizer, index, tok.eos_id, schema, finish_names)
        keys += simulate_typing(query, lambda p: suggester(p, query[len(p):]))
        ngram_keys += simulate_typing(query, lambda p: ngram_suggest(p, query[len(p):]))
        chars += len(query)
        if progress is not None:
            progress(n + 1, len(rows))
    return {
        "n": len(rows),
        "next_token_acc": round(hits / max(targets, 1), 4),
        "ksr": round(1 - keys / max(chars, 1), 4),
        "ngram_next_token_acc": round(ngram_hits / max(targets, 1), 4),
        "ngram_ksr": round(1 - ngram_keys / max(chars, 1), 4),
        "tokens": targets,
        "characters": chars,
        "keystrokes": keys,
        "ngram_keystrokes": ngram_keys,
        "model": manifest.name,
        "finish_names": finish_names,
    }


def read_rows(path: str, limit: int | None = None, required: tuple[str, ...] = ("schema", "sql")) -> list[dict]:
    """JSON-lines rows with the `required` string fields (others ignored); an error names the bad line."""
    return read_jsonl(path, limit, valid=lambda row: all(isinstance(row.get(k), str) for k in required),
                      need=f"string fields {', '.join(map(repr, required))}")


def print_progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\reval [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
