"""The sql-autocomplete task format (pocketlm.tasks.sql), the completer's healing and KV-cache reuse
(pocketlm.completer, with a scripted fake backend) and the eval's keystroke arithmetic
(pocketlm.evals.sql), with a real byte-level BPE tokenizer trained on the synthetic corpus."""

from __future__ import annotations

import asyncio
import random

import pytest

from export.tokenizer_train import BOS_ID, EOS_ID, save_tokenizer, train_tokenizer
from pocketlm.completer import SqlCompleter
from pocketlm.evals.sql import accepted_length, cut_at_stop, read_rows, simulate_typing
from pocketlm.manifest import Architecture, Manifest, TokenizerInfo, Variant
from pocketlm.tasks import sql
from pocketlm.tasks.sql import (
    PromptError, build_prompt, compact_schema, parse_schema, schema_text, split_heal, training_ids,
)
from pocketlm.tokenizer import Tokenizer

VOCAB = 512
SCHEMA = "head(head_ID, name, born_state, age)\ndepartment(Department_ID, Name, Creation, Budget_in_Billions)"


@pytest.fixture(scope="module")
def tok(sql_rows, tmp_path_factory) -> Tokenizer:
    texts = [r["schema"] for r in sql_rows] + [r["sql"] for r in sql_rows] + [SCHEMA]
    path = tmp_path_factory.mktemp("sqltok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(texts, VOCAB), path)
    loaded = Tokenizer.from_file(path)
    assert Tokenizer.from_str(path.read_text(encoding="utf-8")).encode(SCHEMA) == loaded.encode(SCHEMA)
    return loaded


def enc(tok, text):
    return tok.encode(text)


# ---------------------------------------------------------------------------------------- format


def test_compact_schema():
    messy = "\n  head(head_ID,   name)\t\r\n\n   \n dept( id ,\tx )  \r\n"
    assert compact_schema(messy) == "head(head_ID, name)\ndept( id , x )"
    assert compact_schema("") == "" and compact_schema(" \n\t\n") == ""
    assert compact_schema(compact_schema(messy)) == compact_schema(messy)  # idempotent


def test_schema_text_puts_every_name_after_a_space(tok):
    assert parse_schema("head(head_ID, name)\n\nnotes") == [("head", ["head_ID", "name"]), ("notes", [])]
    text = schema_text("head(head_ID,  name)\ndept(id)\nnotes")
    assert text == " head ( head_ID, name )\n dept ( id )\n notes"
    # the name tokens in the schema are the tokens the query uses after FROM / SELECT / a comma
    pieces = tok.pre_tokenize(text)
    assert " head" in pieces and " dept" in pieces and " name" in pieces
    assert tok.pre_tokenize("SELECT name FROM head")[-1] == " head"


def test_training_ids_layout(tok, sql_rows):
    row = sql_rows[7]
    ids = training_ids(tok, row["schema"], row["sql"], BOS_ID, EOS_ID)
    schema_ids, sep_ids = enc(tok, schema_text(row["schema"])), enc(tok, sql.SEPARATOR)
    sql_ids = enc(tok, row["sql"])
    assert ids == [BOS_ID] + schema_ids + sep_ids + sql_ids + [EOS_ID]
    assert tok.decode(ids) == schema_text(row["schema"]) + "\n\n" + row["sql"]
    assert ids.count(BOS_ID) == 1 and ids.count(EOS_ID) == 1
    # the schema part of a prompt is the same ids whatever the query (so its KV cache can be reused)
    prompt = build_prompt(tok, row["schema"], "", bos_id=BOS_ID, max_seq_len=4096, reserve=16)
    assert prompt.schema_ids == ids[: 1 + len(schema_ids) + len(sep_ids)] and prompt.prefix_ids == []


@pytest.mark.parametrize(
    "prefix, context, heal",
    [
        ("SELECT na", "SELECT", " na"),
        ("SELECT name ", "SELECT name", " "),
        ("SELECT name  ", "SELECT name", "  "),
        ("", "", ""),
        ("SELECT count(*", "SELECT count", "(*"),
        ("SELECT", "", "SELECT"),
        ("SELECT T1.", "SELECT T1", "."),
        ("SELECT name FROM head WHERE age  >  5", "SELECT name FROM head WHERE age  > ", " 5"),
    ],
)
def test_split_heal(tok, prefix, context, heal):
    assert split_heal(tok, prefix) == (context, heal)


def test_prompt_plus_heal_matches_training_ids_at_every_prefix(tok, sql_rows):
    """Train/inference consistency: for every prefix of a training query, the prompt's ids are the
    first ids of the training example and the healed bytes are the rest of the prefix."""
    rng = random.Random(0)
    for row in rng.sample(sql_rows, 25):
        full = training_ids(tok, row["schema"], row["sql"], BOS_ID, EOS_ID)
        for cut in range(len(row["sql"]) + 1):
            prefix = row["sql"][:cut]
            p = build_prompt(tok, row["schema"], prefix, bos_id=BOS_ID, max_seq_len=4096, reserve=16)
            assert p.truncated == 0
            assert full[: len(p.ids)] == p.ids, prefix
            assert tok.decode_bytes(p.prefix_ids) + p.heal == prefix.encode()


# ---------------------------------------------------------------------------------- truncation


def long_schema(n_tables: int) -> str:
    return "\n".join(f"table_{i}(col_a_{i}, name, born_state, age, Budget_in_Billions)" for i in range(n_tables))


def test_build_prompt_no_truncation(tok):
    p = build_prompt(tok, SCHEMA, "SELECT name FROM he", bos_id=BOS_ID, max_seq_len=256, reserve=16)
    assert p.truncated == 0 and p.heal == b" he"
    assert p.schema_ids == [BOS_ID] + enc(tok, schema_text(SCHEMA)) + enc(tok, "\n\n")
    assert p.prefix_ids == enc(tok, "SELECT name FROM") and p.ids == p.schema_ids + p.prefix_ids


@pytest.mark.parametrize("max_seq_len, reserve", [(64, 16), (100, 8), (40, 20)])
def test_build_prompt_drops_oldest_schema_tokens_first(tok, max_seq_len, reserve):
    schema, prefix = long_schema(20), "SELECT name FROM head WHERE"
    sep = enc(tok, sql.SEPARATOR)
    body = enc(tok, schema_text(schema))
    context, heal = split_heal(tok, prefix)
    prefix_ids = enc(tok, context)
    p = build_prompt(tok, schema, prefix, bos_id=BOS_ID, max_seq_len=max_seq_len, reserve=reserve)
    budget = max_seq_len - reserve - min(len(heal.encode()), reserve)
    assert len(p.ids) == budget  # filled to the brim, not beyond
    assert len(p.ids) + reserve <= max_seq_len
    assert p.prefix_ids == prefix_ids  # the query prefix is kept whole while schema is left to drop
    assert p.schema_ids[0] == BOS_ID and p.schema_ids[-len(sep):] == sep
    kept = p.schema_ids[1 : len(p.schema_ids) - len(sep)]
    assert kept == body[len(body) - len(kept):]  # the most recent schema tokens
    assert p.truncated == len(body) - len(kept) > 0
    assert p.heal == heal.encode()


def test_build_prompt_then_drops_oldest_prefix_tokens(tok):
    schema = long_schema(5)
    prefix = "SELECT " + " ,  ".join(f"col_a_{i}" for i in range(60)) + " FROM head WHERE name"
    sep = enc(tok, sql.SEPARATOR)
    body = enc(tok, schema_text(schema))
    context, heal = split_heal(tok, prefix)
    assert heal == " name"
    prefix_ids = enc(tok, context)
    max_seq_len, reserve = 128, 16
    assert len(prefix_ids) > max_seq_len  # the prefix alone overflows the context
    p = build_prompt(tok, schema, prefix, bos_id=BOS_ID, max_seq_len=max_seq_len, reserve=reserve)
    assert p.schema_ids == [BOS_ID] + sep  # the whole schema went first, <bos> and separator stay
    assert p.prefix_ids == prefix_ids[len(prefix_ids) - len(p.prefix_ids):]  # the most recent tokens
    assert len(p.ids) + reserve + len(b" name") == max_seq_len
    assert p.truncated == len(body) + len(prefix_ids) - len(p.prefix_ids)


def test_build_prompt_rejects_impossible_reserve(tok):
    for reserve in (0, 63, 64, 100):
        with pytest.raises(PromptError, match="cannot reserve"):
            build_prompt(tok, SCHEMA, "SELECT", bos_id=BOS_ID, max_seq_len=64, reserve=reserve)


# ------------------------------------------------------------------- completer with a fake backend


class FakeCache:
    def __init__(self):
        self.ids: list[int] = []

    @property
    def length(self) -> int:
        return len(self.ids)

    def truncate(self, n: int) -> None:
        if not 0 <= n <= len(self.ids):
            raise ValueError(f"cannot truncate a cache of {len(self.ids)} positions to {n}")
        del self.ids[n:]


class OracleBackend:
    """A 'model' that wants the query to be `target`: after the prompt it favours the longest token
    continuing the target from what the cache holds (the schema part is skipped: `schema_len`)."""

    def __init__(self, tok: Tokenizer, target: str, schema_len: int, fail_on_call: int | None = None):
        self.tok, self.target, self.schema_len = tok, target.encode(), schema_len
        self.calls: list[tuple[int, list[int]]] = []  # (start position, fed ids)
        self.fail_on_call = fail_on_call

    def new_cache(self) -> FakeCache:
        return FakeCache()

    async def forward(self, ids, cache: FakeCache):
        self.calls.append((cache.length, list(ids)))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("backend failed")
        cache.ids.extend(ids)
        typed = self.tok.decode_bytes(cache.ids[self.schema_len:])
        logits = [-1.0] * self.tok.vocab_size
        if not self.target.startswith(typed):
            return logits
        rest = self.target[len(typed):]
        if not rest:
            logits[EOS_ID] = 100.0
            return logits
        for t in range(self.tok.vocab_size):
            b = self.tok.token_bytes(t) if not self.tok.is_special(t) else b""
            if b and rest.startswith(b):
                logits[t] = float(len(b))
        return logits


def make_manifest(tok: Tokenizer, max_seq_len: int = 256) -> Manifest:
    arch = Architecture(vocab_size=tok.vocab_size, dim=16, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=32,
                        max_seq_len=max_seq_len)
    return Manifest(
        name="fake", task="sql", architecture=arch,
        tokenizer=TokenizerInfo("tokenizer.json", "0" * 64, tok.vocab_size, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=0),
        variants={"fp32": Variant("model.onnx", "0" * 64, 1, "none")}, default_variant="fp32",
        prompt={"format": sql.FORMAT}, sampling={"max_new_tokens": 32, "temperature": 0.0, "stop": [";", "\n"]},
    )


TARGET = "SELECT name ,  born_state FROM head WHERE age  >  56 ORDER BY name; DELETE FROM head"
EXPECTED = TARGET[: TARGET.index(";")]


def completer_for(tok, target=TARGET, **kw):
    schema_len = len(build_prompt(tok, SCHEMA, "", bos_id=BOS_ID, max_seq_len=256, reserve=16).schema_ids)
    backend = OracleBackend(tok, target, schema_len, **kw)
    return SqlCompleter(make_manifest(tok), tok, backend), backend


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("prefix", ["", "S", "SELECT", "SELECT na", "SELECT name ", "SELECT name ,  born_st",
                                    "SELECT name ,  born_state FROM head WHERE age  >  5"])
def test_completer_heals_and_never_repeats_the_healed_bytes(tok, prefix):
    completer, _ = completer_for(tok)
    result = run(completer.complete(SCHEMA, prefix))
    assert prefix + result.text == EXPECTED  # the healed part is generated but not reported again
    assert result.stop_reason == "stop_string"
    assert tok.decode(result.token_ids).startswith(prefix[len(split_heal(tok, prefix)[0]):])


def test_completer_streams_only_text_after_the_healed_bytes(tok):
    completer, _ = completer_for(tok)
    pieces = []
    result = run(completer.complete(SCHEMA, "SELECT na", on_token=lambda t, s: pieces.append(s)))
    assert "".join(pieces) == result.text == EXPECTED[len("SELECT na"):]


def test_completer_reuses_the_schema_cache_while_typing(tok):
    """A prompt is always fed as two chunks, the schema part minus its last token and then the rest
    (so int8's per-call activation scales see the same chunks whatever was typed before); only the
    first chunk is reused from one keystroke to the next."""
    completer, backend = completer_for(tok)
    schema_len = backend.schema_len
    first = run(completer.complete(SCHEMA, "SELECT na"))
    assert first.stats["reused_tokens"] == 0
    assert backend.calls[0][0] == 0 and len(backend.calls[0][1]) == schema_len - 1
    assert backend.calls[1][0] == schema_len - 1
    n_calls = len(backend.calls)
    second = run(completer.complete(SCHEMA, "SELECT name ,  bo"))
    assert second.stats["reused_tokens"] == schema_len - 1
    start, fed = backend.calls[n_calls]  # the second prompt starts right after the reused schema chunk
    assert start == schema_len - 1 and len(fed) < schema_len
    assert "SELECT name ,  bo" + second.text == EXPECTED
    # typing backwards (deleting characters) and another schema both give fresh, correct answers
    third = run(completer.complete(SCHEMA, "SEL"))
    assert "SEL" + third.text == EXPECTED  # "SEL" is all healed: only the separator's last token is fed
    assert third.stats["reused_tokens"] == schema_len - 1
    n_calls = len(backend.calls)
    other = run(completer.complete("other(x)\n" + SCHEMA, "SELECT"))
    assert other.stats["reused_tokens"] == 0 and backend.calls[n_calls][0] == 0


def test_completer_keystroke_by_keystroke_equals_a_fresh_completer(tok):
    completer, _ = completer_for(tok)
    for cut in range(0, len(EXPECTED) + 1, 3):
        prefix = EXPECTED[:cut]
        kept = run(completer.complete(SCHEMA, prefix))
        fresh = run(completer_for(tok)[0].complete(SCHEMA, prefix))
        assert (kept.text, kept.token_ids) == (fresh.text, fresh.token_ids), prefix


@pytest.mark.parametrize("fail_on_call", [1, 2])  # the prefill itself, or the first decode step
def test_completer_recovers_after_a_failed_forward(tok, fail_on_call):
    completer, backend = completer_for(tok)
    run(completer.complete(SCHEMA, "SELECT"))
    backend.fail_on_call = len(backend.calls) + fail_on_call
    with pytest.raises(RuntimeError, match="backend failed"):
        run(completer.complete(SCHEMA, "SELECT name ,  born_state FROM"))
    again = run(completer.complete(SCHEMA, "SELECT name ,  born_state FROM he"))
    assert "SELECT name ,  born_state FROM he" + again.text == EXPECTED


def test_completer_context_overflow_is_truncated_not_an_error(tok):
    completer, _ = completer_for(tok)
    long = long_schema(80)
    result = run(completer.complete(long, "SELECT na"))
    assert result.stats["truncated_tokens"] > 0
    assert isinstance(result.text, str)


# ------------------------------------------------------------------------------------ eval maths


@pytest.mark.parametrize(
    "suggestion, remaining, expected",
    [
        (" name FROM head", " name FROM head", 15),  # all of it
        (" name FROM head WHERE", " name FROM head", 15),  # longer than what is left: up to the end
        (" name FROM head", " name FROM heads", 11),  # 'head' would split 'heads': back to the boundary
        (" name FROM xyz", " name FROM head", 11),  # " name FROM " (a space ends a word), then they differ
        ("count(*)", "count(*) FROM t", 8),
        ("count(", "count(*) FROM t", 6),  # '(' ends a word
        ("x", "x y", 0),  # one character is typed, not accepted
        ("ab", "abc", 0),  # no boundary after 'ab'
        ("", "SELECT", 0),
        ("FROM", " FROM", 0),  # wrong from the first character
    ],
)
def test_accepted_length(suggestion, remaining, expected):
    assert accepted_length(suggestion, remaining) == expected


QUERY = "SELECT name ,  age FROM head WHERE age  >  56"


def test_simulate_typing_perfect_and_empty_suggesters():
    assert simulate_typing(QUERY, lambda typed: QUERY[len(typed):]) == 1  # one keystroke accepts everything
    assert simulate_typing(QUERY, lambda typed: "") == len(QUERY)  # ksr 0
    assert simulate_typing(QUERY, lambda typed: "zzz") == len(QUERY)  # wrong suggestions save nothing


def test_simulate_typing_one_keystroke_per_accepted_chunk(tok):
    """A suggester that offers exactly the next pre-token: each chunk of >= 2 characters costs one
    keystroke, a 1-character chunk is typed (also one keystroke)."""
    chunks = tok.pre_tokenize(QUERY)
    assert "".join(chunks) == QUERY

    def next_chunk(typed):
        done = 0
        for c in chunks:
            if done >= len(typed):
                return c
            done += len(c)
        return ""

    assert simulate_typing(QUERY, next_chunk) == len(chunks)
    assert 1 - len(chunks) / len(QUERY) > 0.5


def test_cut_at_stop():
    assert cut_at_stop(" name FROM t; DROP") == " name FROM t"
    assert cut_at_stop(" a\nb;c") == " a" and cut_at_stop(" plain") == " plain"


def test_read_rows_limit(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"schema": "t(a)", "sql": "SELECT {i}", "db_id": "x"}}\n\n' for i in range(4)))
    assert [r["sql"] for r in read_rows(str(path), 2)] == ["SELECT 0", "SELECT 1"]
    assert read_rows(str(path), 0) == [] and len(read_rows(str(path))) == 4
    path.write_text(path.read_text() + "garbage\n")
    assert len(read_rows(str(path), 4)) == 4  # rows past the limit are not read
    with pytest.raises(ValueError, match=r"rows.jsonl:9: not valid JSON"):
        read_rows(str(path))


@pytest.mark.parametrize("prefix", ["SELECT na\ud800", "SELECT \ud83d\ude00 x", "SELECT 'a\udfff", "\ud800"])
def test_prompt_with_surrogates_from_javascript_is_what_the_tokenizer_encodes(tok, prefix):
    """Lone surrogates become U+FFFD and surrogate pairs one character, in the context and the healed
    part alike, so healing asks for bytes the tokenizer can produce."""
    from pocketlm.tokenizer import replace_lone_surrogates

    p = build_prompt(tok, SCHEMA, prefix, bos_id=BOS_ID, max_seq_len=256, reserve=16)
    assert tok.decode(p.prefix_ids) + p.heal.decode("utf-8") == replace_lone_surrogates(prefix)
