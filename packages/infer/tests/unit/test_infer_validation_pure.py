"""The pure parts of validation: request translation, id rewriting, forced plans, engine flags."""

import json
import math
from typing import Any

import pytest
import torch

from mlnode.common.errors import InvalidRequest
from mlnode.infer.args import add_validation_flags, parse_additional_args
from mlnode.infer.forcing.batch import force_logits, swap_sampled
from mlnode.infer.forcing.plan import build_plan, forced_ids, target
from mlnode.infer.forcing.protocol import (
    FORCED_IDS_XARG,
    OUT_OF_VOCAB,
    PROCESSOR_FQCN,
    probe_message,
    read_probe,
)
from mlnode.infer.testing.gonka import Position, compare
from mlnode.infer.validation.replay import (
    decimal_id,
    engine_body,
    fill,
    parse_body,
    read_request,
)
from mlnode.infer.validation.token_ids import (
    ChatAnswerRewriter,
    SseRewriter,
    decimal,
    rewrite_chat,
    rewrite_json,
)

# Request side.


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("41", 41),
        (" 7", 7),
        (12, 12),
        ("-5", OUT_OF_VOCAB),
        (str(2**40), OUT_OF_VOCAB),
        ("river", None),
        ("", None),
        (True, None),
        (None, None),
    ],
)
def test_decimal_id(token: object, expected: int | None) -> None:
    assert decimal_id(token) == expected


def test_enforced_tokens_become_forced_ids_and_gonka_fields_go() -> None:
    tokens = [{"token": "41", "top_tokens": ["41", "26"]}, {"token": "river"}, {"token": "3"}]
    body = {"model": "m", "enforced_tokens": {"tokens": tokens}, "logprobs": True}
    body |= {"logprobs_mode": "raw_logprobs", "vllm_xargs": {"mine": 1}}
    replay = read_request(body, chat=True)
    assert replay.forcing and replay.forced == [41, None, 3] and replay.texts == {1: "river"}
    assert replay.logprobs_mode == "raw_logprobs"
    ids = fill(replay, {1: [17, 18]})
    assert ids == [41, 17, 3]
    sent = json.loads(engine_body(replay, ids))
    assert sent["vllm_xargs"] == {"mine": 1, FORCED_IDS_XARG: [41, 17, 3]}
    assert sent["return_tokens_as_token_ids"] is True
    assert not {"enforced_tokens", "enforced_str", "logprobs_mode"} & set(sent)


def test_text_that_tokenizes_to_nothing_ends_the_run() -> None:
    replay = read_request({"enforced_tokens": {"tokens": [{"token": " "}]}}, chat=True)
    assert fill(replay, {0: []}) == [OUT_OF_VOCAB]


def test_enforced_str_is_tokenized_whole() -> None:
    replay = read_request({"enforced_str": "the cat", "logprobs": True}, chat=True)
    assert replay.forcing and replay.texts == {-1: "the cat"}
    assert fill(replay, {-1: [5, 6]}) == [5, 6]


def test_enforced_tokens_win_over_enforced_str() -> None:
    body = {"enforced_tokens": {"tokens": [{"token": "1"}]}, "enforced_str": "x"}
    assert read_request(body, chat=True).texts == {}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"enforced_tokens": {"tokens": "41"}}, "enforced_tokens"),
        ({"enforced_tokens": [1, 2]}, "enforced_tokens"),
        ({"enforced_tokens": {"tokens": [{"top_tokens": []}]}}, "enforced_tokens"),
        ({"enforced_str": 5}, "enforced_str"),
        ({"logprobs_mode": 1}, "logprobs_mode"),
        ({"enforced_str": "x", "vllm_xargs": [1]}, "vllm_xargs"),
    ],
)
def test_malformed_gonka_fields_are_422(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_request(body, chat=True)
    assert caught.value.param == param


def test_logprobs_flag_per_api() -> None:
    assert read_request({"logprobs": True}, chat=True).logprobs
    assert not read_request({"logprobs": False}, chat=True).logprobs
    assert read_request({"logprobs": 0}, chat=False).logprobs
    assert not read_request({}, chat=False).logprobs
    assert not read_request({"logprobs": 5}, chat=False).forcing


def test_bodies_that_are_not_json_objects() -> None:
    assert parse_body(b"[1]") is None
    assert parse_body(b"\xff") is None
    assert parse_body(b'{"a": 1}') == {"a": 1}


# Answer side.


def test_decimal() -> None:
    assert decimal("token_id:42") == "42"
    assert decimal("token_id:x") == "token_id:x"
    assert decimal("river") == "river"
    assert decimal(7) == 7


def _chat_answer(bytes_of_chosen: list[int]) -> dict[str, Any]:
    top = [{"token": "token_id:41", "logprob": -3.5, "bytes": list(b"token_id:41")}]
    entry = {"token": "token_id:41", "logprob": -3.5, "bytes": bytes_of_chosen, "top_logprobs": top}
    return {"choices": [{"index": 0, "logprobs": {"content": [entry]}, "token_ids": [41]}]}


def test_chat_answer_rewritten_with_text_bytes_kept() -> None:
    out = json.loads(rewrite_json(json.dumps(_chat_answer(list(b"river"))).encode()))
    entry = out["choices"][0]["logprobs"]["content"][0]
    assert entry["token"] == "41" and entry["bytes"] == list(b"river")
    assert entry["top_logprobs"] == [{"token": "41", "logprob": -3.5, "bytes": list(b"41")}]
    assert out["choices"][0]["token_ids"] == [41]


def test_chosen_token_spelled_as_placeholder_gets_id_bytes() -> None:
    out = json.loads(rewrite_json(json.dumps(_chat_answer(list(b"token_id:41"))).encode()))
    assert out["choices"][0]["logprobs"]["content"][0]["bytes"] == list(b"41")


def test_completions_answer_rewritten() -> None:
    logprobs = {"tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-1.0, -2.0]}
    logprobs["top_logprobs"] = [{"token_id:5": -1.0, "token_id:9": -1.5}, None]
    out = json.loads(rewrite_json(json.dumps({"choices": [{"logprobs": logprobs}]}).encode()))
    got = out["choices"][0]["logprobs"]
    assert got["tokens"] == ["5", "6"]
    assert got["top_logprobs"] == [{"5": -1.0, "9": -1.5}, None]


def test_answers_without_placeholders_are_left_byte_for_byte() -> None:
    raw = b'{"choices": [{"text": "token_id: is a word"}],  "x": 1.50}'
    assert rewrite_json(raw) == raw
    assert rewrite_json(b"not json token_id:1") == b"not json token_id:1"


def test_sse_rewriter_keeps_events_and_splits() -> None:
    event = b"data: " + json.dumps(_chat_answer(list(b"river"))).encode() + b"\n\n"
    stream = event + b": comment\n\n" + event + b"data: [DONE]\n\n"
    rewriter = SseRewriter()
    out = b"".join(rewriter.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    out += rewriter.close()
    lines = out.split(b"\n\n")
    assert lines[1] == b": comment" and lines[3] == b"data: [DONE]"
    for line in (lines[0], lines[2]):
        entry = json.loads(line[6:])["choices"][0]["logprobs"]["content"][0]
        assert entry["token"] == "41"


def test_sse_rewriter_emits_every_complete_line_at_once() -> None:
    rewriter = SseRewriter()
    event = b"data: " + json.dumps(_chat_answer(list(b"x"))).encode()
    assert rewriter.feed(event) == b""
    assert b'"token":"41"' in rewriter.feed(b"\n")
    assert rewriter.feed(b"\n") == b"\n"
    assert rewriter.feed(b"data: [DO") == b"" and rewriter.close() == b"data: [DO"


# Engine plugin, pure parts.


@pytest.mark.parametrize(
    ("ids", "plan"),
    [
        ([5, 6, 7], [5, 6, 7, 3]),
        ([5, 3], [5, 3]),
        ([5, 99, 6], [5, 3]),
        ([5, -1, 6], [5, 3]),
        ([], [3]),
    ],
)
def test_plan_ends_with_eos_and_stops_at_out_of_vocab(ids: list[int], plan: list[int]) -> None:
    assert build_plan(ids, vocab_size=50, eos=3) == plan


def test_plan_without_eos_repeats_the_last_id() -> None:
    plan = build_plan([5, 6], vocab_size=50, eos=None)
    assert [target(plan, k) for k in range(4)] == [5, 6, 6, 6]
    assert target([], 0) is None and target(plan, -1) is None


def test_forced_rows_only_in_logits_and_samples() -> None:
    logits = torch.full((3, 4), -1e9)
    logits[0, 1] = 5.0
    force_logits(logits, [0, 2], [2, 3])
    assert logits[0].tolist() == [-math.inf, -math.inf, 0.0, -math.inf]
    assert logits[1].tolist() == [-1e9] * 4
    assert logits[2].tolist() == [-math.inf, -math.inf, -math.inf, 0.0]
    sampled = torch.tensor([7, 8, 9], dtype=torch.int32)
    swap_sampled(sampled, [1], [4])
    assert sampled.tolist() == [7, 4, 9] and sampled.dtype == torch.int32
    force_logits(logits, [], [])
    swap_sampled(sampled, [], [])
    assert sampled.tolist() == [7, 4, 9]


def test_forced_ids_read_and_checked() -> None:
    assert forced_ids(None) is None and forced_ids({"other": 1}) is None
    assert forced_ids({FORCED_IDS_XARG: [1, 2]}) == [1, 2]
    for bad in ("1,2", [1, "2"], [True]):
        with pytest.raises(ValueError):
            forced_ids({FORCED_IDS_XARG: bad})


def test_probe_message_round_trip() -> None:
    engine_error = "1 validation error: " + probe_message(False, "v1: gone") + " (request)"
    assert read_probe(engine_error) == (False, "v1: gone")
    assert read_probe("something else") is None


# Engine flags.


def test_flags_added_to_engine_args() -> None:
    flags = add_validation_flags(parse_additional_args(["-tp", "2"]), "raw_logprobs", True)
    assert flags.args.args == (
        "-tp",
        "2",
        "--logprobs-mode",
        "raw_logprobs",
        "--logits-processors",
        PROCESSOR_FQCN,
    )
    assert flags.args.tensor_parallel_size == 2 and flags.forcing
    assert flags.logprobs_mode == "raw_logprobs"


def test_logprobs_mode_given_in_args_wins() -> None:
    args = parse_additional_args(["--logprobs-mode=processed_logprobs"])
    flags = add_validation_flags(args, "raw_logprobs", True)
    assert flags.logprobs_mode == "processed_logprobs"
    assert flags.args.args.count("--logprobs-mode") == 0


@pytest.mark.parametrize("spec", [["--speculative-config", "{}"], ["-sc", "{}"]])
def test_no_plugin_with_speculative_decoding(spec: list[str]) -> None:
    flags = add_validation_flags(parse_additional_args(spec), "raw_logprobs", True)
    assert not flags.forcing and PROCESSOR_FQCN not in flags.args.args


def test_forcing_off() -> None:
    flags = add_validation_flags(parse_additional_args([]), "raw_logprobs", False)
    assert not flags.forcing and "--logits-processors" not in flags.args.args


# The validator's comparison (ported for the tests).


def test_compare() -> None:
    a = [Position("1", -1.0, {"1": -1.0, "2": -2.0}), Position("3", -0.5, {"3": -0.5, "4": -3.0})]
    assert compare(a, a).similarity == 1.0
    assert compare(a, a[:1]).reason == "different_length"
    assert compare(a, [a[0], Position("4", -3.0, {})]).reason == "different_tokens"
    shifted = [Position("1", -1.0, {"1": -1.5, "2": -2.0}), a[1]]
    expected = 1 - (0.5 / 2.5 / 2 / 2) / 100
    assert compare(a, shifted).similarity == pytest.approx(expected)


def test_chat_fast_path_matches_the_exact_rewrite() -> None:
    answer = _chat_answer(list(b"river"))
    answer["choices"][0]["message"] = {"content": 'say "token":"token_id:5" and token_id:7'}
    for separators in ((",", ":"), (", ", ": ")):
        raw = json.dumps(answer, separators=separators).encode()
        fast = json.loads(rewrite_chat(raw))
        assert fast == json.loads(rewrite_json(raw))
        assert fast["choices"][0]["message"] == answer["choices"][0]["message"]
    for separators in ((",", ":"), (", ", ": ")):
        chunk = b"data: " + json.dumps(answer, separators=separators).encode() + b"\n\n"
        out = SseRewriter(chat=True).feed(chunk * 2).split(b"\n\n")
        assert out[2] == b"" and out[0] == out[1]
        assert json.loads(out[0][6:]) == json.loads(rewrite_json(chunk[6:]))


def test_self_check_reports_missing_patch_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlnode.infer.forcing import plugin

    class MovedSampler:
        def sample(self, logits: object) -> None:
            """A sampler whose signature no longer has the patch point."""

    monkeypatch.setattr(plugin, "_state", {})
    monkeypatch.setattr(plugin, "_v1_sampler", lambda: MovedSampler)
    ready, reason = plugin.readiness()
    assert not ready and "v1 Sampler.sample signature changed" in reason
    assert not getattr(MovedSampler.sample, plugin._MARK, False)  # left unwrapped


def test_chat_answer_is_rewritten_piece_by_piece_as_when_whole() -> None:
    answer = _chat_answer(list(b"river"))
    entries = answer["choices"][0]["logprobs"]["content"]
    entries += [dict(entries[0], token=f"token_id:{i}") for i in range(50)]
    answer["choices"][0]["message"] = {"content": 'say "token":"token_id:5" and token_id:7'}
    for separators in ((",", ":"), (", ", ": ")):
        raw = json.dumps(answer, separators=separators).encode()
        whole = rewrite_chat(raw)
        for size in (1, 7, 43, 44, 1000):
            rewriter = ChatAnswerRewriter()
            pieces = [rewriter.feed(raw[i : i + size]) for i in range(0, len(raw), size)]
            streamed = b"".join(pieces) + rewriter.close()
            assert streamed == whole, (separators, size)
            if separators == (",", ":"):
                assert sum(map(len, pieces)) > len(whole) // 2, "most of it left before the end"
