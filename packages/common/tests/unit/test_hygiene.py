"""Redaction of URLs and command lines, and the environment children inherit."""

import pytest

from mlnode.common.hygiene import child_env, is_secret_name, redact_argv, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pa55@host:9/cb", "http://user:***@host:9/cb"),
        ("https://user:p%40ss@host/x?y=1", "https://user:***@host/x?y=1"),
        ("http://tokenonly@host/x", "http://***@host/x"),
        ("http://host/x?token=abc&n=1", "http://host/x?token=***&n=1"),
        ("http://host/x?api_key=abc", "http://host/x?api_key=***"),
        ("http://host:8080/callback", "http://host:8080/callback"),
        ("http://host/x?tokenizer=t", "http://host/x?tokenizer=t"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_finds_urls_inside_messages() -> None:
    message = "POST http://u:secretpw@10.0.0.1:9000/generated: ConnectError: refused"
    assert (
        redact_text(message) == "POST http://u:***@10.0.0.1:9000/generated: ConnectError: refused"
    )
    assert "secretpw" not in redact_text("a 'http://u:secretpw@h/x' b")


def test_redact_argv_masks_secret_flags_only() -> None:
    argv = [
        "python",
        "-m",
        "vllm",
        "--api-key",
        "K1",
        "--hf-token=K2",
        "--tokenizer",
        "/m",
        "--model",
        "/models/x",
        "--download-dir",
        "http://u:K3@h/",
    ]
    shown = " ".join(redact_argv(argv))
    assert "K1" not in shown and "K2" not in shown and "K3" not in shown
    assert "--tokenizer /m" in shown and "--model /models/x" in shown
    assert "--api-key ***" in shown and "--hf-token=***" in shown


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("MLNODE_API_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("VLLM_API_KEY", True),
        ("DB_PASSWORD", True),
        ("TOKENIZERS_PARALLELISM", False),
        ("--tokenizer", False),
        ("CUDA_VISIBLE_DEVICES", False),
        ("KEY_FILE", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_child_env_keeps_what_engines_need_and_drops_secrets() -> None:
    parent = {
        "PATH": "/bin",
        "HOME": "/h",
        "LD_PRELOAD": "libtcmalloc.so",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "2",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_API_KEY": "x",
        "HF_HUB_OFFLINE": "1",
        "HF_TOKEN": "hf",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": "/p",
        "LC_ALL": "C.UTF-8",
        "MLNODE_POC_SCHEME": "decode",
        "MLNODE_API_TOKEN": "node-secret",
        "MLNODE_GRPC_KEY_FILE": "/k",
        "MLNODE_HOST": "0.0.0.0",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "gh",
        "RANDOM_THING": "r",
    }
    kept = child_env(parent)
    assert set(kept) == {
        "PATH",
        "HOME",
        "LD_PRELOAD",
        "CUDA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
        "VLLM_CPU_KVCACHE_SPACE",
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "TOKENIZERS_PARALLELISM",
        "PYTHONPATH",
        "LC_ALL",
        "MLNODE_POC_SCHEME",
    }


async def test_callback_errors_name_the_destination_only_and_retries_do_not_warn(caplog) -> None:
    import asyncio
    import logging

    from mlnode.common.callbacks import CallbackPolicy, DestinationSender
    from mlnode.common.testing.node_process import free_port

    policy = CallbackPolicy(
        callback_attempts=1000,
        callback_backoff_s=0.01,
        callback_backoff_max_s=0.02,
        callback_timeout_s=1,
        callback_deadline_s=60,
        callback_concurrency=2,
        callback_per_destination=1,
        callback_queue=5,
    )
    sender = DestinationSender(policy)
    caplog.set_level(logging.DEBUG, logger="mlnode.common.callbacks")
    sender.start()
    port = free_port()
    sender.submit(f"http://u:pw-123456@127.0.0.1:{port}/generated?token=s3cret", {"i": 1})
    for _ in range(500):
        if sender.stats().retried >= 5:
            break
        await asyncio.sleep(0.01)
    stats = sender.stats()
    await sender.close()
    assert stats.retried >= 5 and stats.last_error is not None
    for secret in ("pw-123456", "s3cret", "/generated"):
        assert secret not in caplog.text and secret not in stats.last_error
    assert f"http://127.0.0.1:{port}" in stats.last_error
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
