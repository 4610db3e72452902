"""The typed wire codec: what travels round-trips exactly, anything else is refused (never unpickled)."""

import math
import pickle
import re

import pytest
import torch

from fedml_prr.algorithms import get_algorithm
from fedml_prr.fedml_adapter.wire import SERVER_RECEIVES, UPLOAD, decode_message, encode_message, make, schemas
from fedml_prr.training.codec import CodecError, decode, encode


def test_a_protocol_tree_round_trips_bit_for_bit():
    tree = {"silo": 1, "step": 7, "final": False, "loss": float("nan"), "name": "B", "none": None,
            "state": {"w": torch.randn(3, 4), "n": torch.tensor(5), "b": torch.zeros(2, dtype=torch.bfloat16)},
            "records": [{"round": 0, "test": {"macro_f1": 0.5, "auc": float("nan")}, "epochs": [{"stage": 1}]}],
            "counts": torch.tensor([3, 0, 1]), "view": torch.arange(10.0)[::2]}
    back = decode(encode(tree))
    assert back.keys() == tree.keys() and back["step"] == 7 and back["final"] is False and back["none"] is None
    assert math.isnan(back["loss"]) and math.isnan(back["records"][0]["test"]["auc"])
    for key in ("w", "n", "b"):
        assert back["state"][key].dtype == tree["state"][key].dtype and torch.equal(back["state"][key], tree["state"][key])
    assert torch.equal(back["view"], tree["view"]) and torch.equal(back["counts"], tree["counts"])


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("data, words", [
    (b"", "wrong magic"), (b"\x80\x04\x95", "wrong magic"),
    (b"FPRR1\n" + (10 ** 6).to_bytes(8, "big") + b"{}", "truncated"),
    (b"FPRR1\n" + (3).to_bytes(8, "big") + b"{x}", "not JSON"),
    (b"FPRR1\n" + (17).to_bytes(8, "big") + b'{"$tensor": "t0"}', "bad tensor reference"),
    (b"FPRR1\n" + (2).to_bytes(8, "big") + b"{}" + b"garbage", "not valid safetensors"),
])
def test_malformed_bytes_are_refused(data, words):
    with pytest.raises(CodecError, match=words):
        decode(data)


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "created"
    with pytest.raises(CodecError, match="wrong magic"):
        decode(pickle.dumps(Evil(str(marker))))
    assert not marker.exists()


def test_values_the_codec_cannot_carry_and_oversized_messages_are_refused():
    for bad in ({"x": object()}, {1: 2}, {"$tensor": "t0"}):
        with pytest.raises(CodecError):
            encode(bad)
    deep = []
    for _ in range(20):
        deep = [deep]
    with pytest.raises(CodecError, match="deeper"):
        encode(deep)
    data = encode({"w": torch.zeros(1000)})
    with pytest.raises(CodecError, match="more than the limit"):
        decode(data, max_bytes=len(data) - 1)


def test_message_schemas_refuse_unknown_fields_and_wrong_types():
    spec = get_algorithm("PRR")
    accepted = {k: v for k, v in schemas(spec.client, spec.server).items() if k in SERVER_RECEIVES}
    good = {"silo": 0, "step": 2, "num_samples": 5, "prototypes": torch.ones(3, 4), "prototype_counts": torch.ones(3),
            "stage": 1, "deputy": {"w": torch.ones(2)}, "records": []}
    message = decode_message(encode_message(make(UPLOAD, 1, 0, good)), peer="client rank 1", accepted=accepted)
    assert message.get_type() == UPLOAD and torch.equal(message.get("payload")["prototypes"], torch.ones(3, 4))
    for bad, words in ((dict(good, evil=1), "has field(s) ['evil'] that the protocol does not allow"),
                       (dict(good, stage="one"), "has a 'stage' that is not an integer"),
                       (dict(good, deputy={"w": 1.0}), "has a 'deputy' that is not a state dict"),
                       ({k: v for k, v in good.items() if k != "num_samples"}, "lacks its field(s) ['num_samples']")):
        with pytest.raises(CodecError, match=re.escape(words)) as error:
            decode_message(encode_message(make(UPLOAD, 1, 0, bad)), peer="client rank 1", accepted=accepted)
        assert "client rank 1" in str(error.value)
    with pytest.raises(CodecError, match="sent a 'message' message; this party accepts"):
        decode_message(encode_message(make("message", 1, 0, {"silo": 0, "step": 1})), peer="p", accepted=accepted)
