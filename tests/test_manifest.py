"""manifest.json validation: each kind of corruption is rejected with a specific message."""

import json
import os

import pytest

from pocketlm.manifest import (
    Architecture, Manifest, ManifestError, TokenizerInfo, Variant, load_manifest, sha256_file,
)


@pytest.fixture
def folder(tmp_path):
    """A structurally valid model folder with placeholder files (validation does not parse ONNX)."""
    (tmp_path / "tokenizer.json").write_text('{"placeholder": true}')
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01" * 100)
    arch = Architecture(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, max_seq_len=64)
    m = Manifest(
        name="toy", task="sql", architecture=arch,
        tokenizer=TokenizerInfo("tokenizer.json", sha256_file(tmp_path / "tokenizer.json"), 300, 1, 2, 0),
        variants={"fp32": Variant("model.onnx", sha256_file(tmp_path / "model.onnx"), 200, "none")},
        default_variant="fp32", prompt={"format": "sql-v2"},
    )
    (tmp_path / "manifest.json").write_text(m.to_json())
    return tmp_path


def edit(folder, change):
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def test_valid_folder_round_trips(folder):
    m = load_manifest(str(folder))
    assert m.architecture.head_dim == 16 and m.variant().file == "model.onnx"
    assert Manifest.to_json(m) == (folder / "manifest.json").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format_version=99), "format_version is 99"),
        (lambda d: d["tokenizer"].update(vocab_size=301), r"tokenizer.vocab_size \(301\) != architecture.vocab_size"),
        (lambda d: d["tokenizer"].update(eos_id=300), r"tokenizer.eos_id = 300 is not a token id"),
        (lambda d: d["tokenizer"].update(bos_id=-1), r"tokenizer.bos_id = -1"),
        (lambda d: d["variants"]["fp32"].update(sha256="0" * 64), "variant 'fp32' file 'model.onnx' has sha256"),
        (lambda d: d["tokenizer"].update(sha256="0" * 64), "tokenizer file 'tokenizer.json' has sha256"),
        (lambda d: d["variants"]["fp32"].update(bytes=5), "is 200 bytes, the manifest says 5"),
        (lambda d: d["variants"]["fp32"].update(file="../model.onnx"), "must be a plain file name"),
        (lambda d: d.update(default_variant="q4"), "default_variant 'q4' is not one of"),
        (lambda d: d["architecture"].update(n_heads=5), "must be divisible by n_heads"),
        (lambda d: d["architecture"].update(dim=0), "architecture.dim must be a positive integer"),
        (lambda d: d["architecture"].update(n_experts=4), "unknown keys"),
        (lambda d: d.pop("tokenizer"), "manifest.tokenizer must be a JSON object"),
        (lambda d: d.update(variants={}), "manifest.variants must be a non-empty object"),
        (lambda d: d["variants"]["fp32"].update(session_config={"session.disable_quant_qdq": 1}),
         r"manifest.variants.fp32.session_config must map option names to strings"),
        (lambda d: d["variants"]["fp32"].update(session_config=["session.disable_quant_qdq"]),
         r"manifest.variants.fp32.session_config must map"),
    ],
)
def test_each_corruption_is_rejected(folder, change, message):
    edit(folder, change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(str(folder))


def test_session_config_is_optional_and_read_back(folder):
    """A variant written before session_config existed has none; one that has it reads back as written."""
    edit(folder, lambda d: d["variants"]["fp32"].pop("session_config"))
    assert load_manifest(str(folder)).variant().session_config == {}
    edit(folder, lambda d: d["variants"]["fp32"].update(session_config={"session.disable_quant_qdq": "1"}))
    assert load_manifest(str(folder)).variant().session_config == {"session.disable_quant_qdq": "1"}


def test_missing_and_truncated_files(folder):
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[:50])
    with pytest.raises(ManifestError, match="truncated or replaced"):
        load_manifest(str(folder))
    os.remove(folder / "model.onnx")
    with pytest.raises(ManifestError, match="'model.onnx' is missing"):
        load_manifest(str(folder))
    os.remove(folder / "tokenizer.json")
    with pytest.raises(ManifestError, match="tokenizer file 'tokenizer.json' is missing"):
        load_manifest(str(folder))


def test_not_json_and_no_manifest(folder, tmp_path_factory):
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="is not valid JSON"):
        load_manifest(str(folder))
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(str(tmp_path_factory.mktemp("empty")))


def test_unknown_variant_lists_the_known_ones(folder):
    with pytest.raises(ManifestError, match="has no variant 'q8'; it has: fp32"):
        load_manifest(str(folder)).variant("q8")
