"""Reading checkpoints tensor by tensor and writing sharded ones, checked with safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mlnode.common.testing import FakeTransport, TransportHub
from mlnode.common.transport.api import TensorMeta
from mlnode.fuse.io.local import LocalSafetensors, SourceNotFound
from mlnode.fuse.io.peer import PeerSource
from mlnode.fuse.io.st_format import SafetensorsFormatError
from mlnode.fuse.io.writer import ShardedWriter, assign_shards
from mlnode.fuse.testing import write_checkpoint

MIXED = {
    "f32": torch.randn(3, 4),
    "bf16": torch.randn(5).to(torch.bfloat16),
    "f16": torch.randn(2, 2, 2).to(torch.float16),
    "i64": torch.arange(6).reshape(2, 3),
    "mask": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
}


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("shards", [1, 3])
def test_local_source_reads_every_dtype_exactly(tmp_path: Path, shards: int, mapped: bool) -> None:
    model = LocalSafetensors(write_checkpoint(tmp_path / "m", MIXED, shards=shards), mapped)
    meta = model.describe()
    assert set(meta) == set(MIXED)
    for name, tensor in MIXED.items():
        assert meta[name].dtype == tensor.dtype and meta[name].shape == tuple(tensor.shape)
        assert torch.equal(model.get(name), tensor)
    model.close()


def test_mapped_tensors_are_private_copies_on_write(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "m", {"a": torch.ones(4096)})
    model = LocalSafetensors(directory, mapped=True)
    model.get("a").add_(1)
    assert torch.equal(model.get("a"), torch.ones(4096))
    assert torch.equal(LocalSafetensors(directory).get("a"), torch.ones(4096))


def test_single_file_path_is_a_source(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "m", {"a": torch.ones(2)})
    assert torch.equal(LocalSafetensors(directory / "model.safetensors").get("a"), torch.ones(2))


def test_missing_path_and_missing_shard_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="no such file"):
        LocalSafetensors(tmp_path / "nope")
    directory = write_checkpoint(tmp_path / "m", MIXED, shards=2)
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SourceNotFound, match="missing shards"):
        LocalSafetensors(directory)


def test_garbage_file_is_a_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(SafetensorsFormatError, match="not a safetensors file"):
        LocalSafetensors(bad)
    bad.write_bytes(b"\x05")
    with pytest.raises(SafetensorsFormatError, match="too short"):
        LocalSafetensors(bad)


@pytest.mark.parametrize(
    "content",
    [
        b"root:$6$secret-hash:19000:0:99999:7:::\n",  # any file: its first 8 bytes as a length
        b"\x20\x00\x00\x00\x00\x00\x00\x00\xffsecret-bytes-not-utf8-here!!!!!",
        b"\x28\x00\x00\x00\x00\x00\x00\x00" + b'{"secret-name":{"dtype":"SECRETDT"}}    ',
        b"\x2c\x00\x00\x00\x00\x00\x00\x00"
        + b'{"w":{"dtype":"F32","shape":["secret-v"],"data_offsets":[0,4]}}',
    ],
    ids=["text", "not-utf8", "bad-dtype", "bad-shape"],
)
def test_format_errors_never_quote_the_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(content)
    with pytest.raises(SafetensorsFormatError) as caught:
        LocalSafetensors(bad)
    message = str(caught.value).replace(str(bad), "<path>")
    assert "secret" not in message.lower() and "root" not in message, message
    assert str(int.from_bytes(content[:8], "little")) not in message


def test_assign_shards_respects_the_size_limit() -> None:
    specs = [(f"t{i}", torch.float32, (10,)) for i in range(5)]  # 40 bytes each
    assert [len(s) for s in assign_shards(specs, 100)] == [2, 2, 1]
    assert [len(s) for s in assign_shards(specs, 10)] == [1, 1, 1, 1, 1]


def _write_all(writer: ShardedWriter, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        writer.write(name, tensor)


def test_writer_makes_a_hf_sharded_checkpoint(tmp_path: Path) -> None:
    tensors = {f"layer.{i}.weight": torch.randn(16, 8) for i in range(5)}
    specs = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    source = write_checkpoint(tmp_path / "src", {"x": torch.ones(1)}, config={"model_type": "x"})
    (source / "tokenizer.json").write_text("{}")
    writer = ShardedWriter(tmp_path / "out", specs, max_shard_size=1100)
    _write_all(writer, tensors)
    assert not (tmp_path / "out").exists()
    out = writer.commit(source)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 16 * 8 * 4
    assert sorted(set(index["weight_map"].values())) == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    for name, file in index["weight_map"].items():
        with safe_open(str(out / file), framework="pt") as f:
            assert torch.equal(f.get_tensor(name), tensors[name])
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path / "out", [("a", torch.float32, (2,))], 10**9)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_out_of_plan_tensors_and_existing_output(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path / "out", [("a", torch.float32, (2,))], 10**9)
    with pytest.raises(ValueError, match="expected a"):
        writer.write("a", torch.zeros(3))
    with pytest.raises(RuntimeError, match="commit after 0 of 1"):
        writer.commit()
    writer.abort()
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        ShardedWriter(tmp_path / "out", [], 10**9)


class RecordingNode(FakeTransport):
    """The in-memory transport, remembering each call's deadline."""

    timeouts: list[float | None]

    def list_tensors(self, peer_id: str, task: str, *, timeout: float | None = None):
        self.timeouts = [timeout]
        return super().list_tensors(peer_id, task, timeout=timeout)

    def fetch(self, peer_id, task, names, *, expected=None, timeout=None, cancel=None):
        self.timeouts.append(timeout)
        return super().fetch(
            peer_id, task, names, expected=expected, timeout=timeout, cancel=cancel
        )


class Lying:
    """Lists `w` as 2 floats, serves 3."""

    def describe(self) -> list[TensorMeta]:
        return [TensorMeta("w", torch.float32, (2,)), TensorMeta("v", torch.float32, (4,))]

    def get(self, name: str) -> torch.Tensor:
        return torch.zeros(3) if name == "w" else torch.zeros(4)


def test_peer_source_fetches_as_listed_within_deadlines() -> None:
    hub = TransportHub()
    hub.node("liar").serve("t", Lying())
    me = RecordingNode(hub, "me")
    source = PeerSource(me, "liar", "t", timeout_s=5, min_bytes_per_s=16)
    assert torch.equal(source.get("v"), torch.zeros(4))  # 16 bytes at 16 B/s: 1 s more
    with pytest.raises(ValueError, match="other than listed"):
        source.get("w")
    assert me.timeouts == [5, 6.0, 5.5]
