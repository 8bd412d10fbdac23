"""Keeping secrets out of logs, status bodies and child processes.

- `redact_url` / `redact_text`: a URL's password (`http://user:pass@host`) and the values of
  query parameters named like secrets become `***`, wherever a URL is logged or reported.
- `redact_argv`: a command line as it may be logged (`--api-key X`, `--hf-token=X` masked).
- `child_env`: the environment a child such as a vLLM engine gets: only the families of
  variables an engine needs (paths, locale, Python, CUDA, OpenMP, vLLM, torch, Hugging Face, the
  project's PoC and engine settings), never a variable named like a secret (the node's
  `MLNODE_API_TOKEN` included) unless it is allowed by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

_SECRET_SEGMENTS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "cookie",
        "signature",
        "sig",
        "apikey",
        "accesskey",
        "privatekey",
    }
)
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")}
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):[^/@\s]*@")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    """A name (variable, flag, parameter) with a word that says it holds a secret.

    Whole words only: `MLNODE_API_TOKEN` and `--api-key` are secrets, `--tokenizer` is not.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if any(w in _SECRET_SEGMENTS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def redact_url(url: str) -> str:
    """`url` with its password and secret-named query values replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_USERINFO.sub(rf"\g<scheme>\g<user>:{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (error messages quoting a URL)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit for a log: values of secret-named flags masked, URLs redacted."""
    shown: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            shown.append(MASK)
            mask_next = False
            continue
        if arg.startswith("-"):
            flag, eq, _ = arg.partition("=")
            if is_secret_name(flag):
                if eq:
                    shown.append(f"{flag}={MASK}")
                else:
                    shown.append(arg)
                    mask_next = True
                continue
        shown.append(redact_text(arg))
    return shown


def secret_values(argv: Sequence[str]) -> list[str]:
    """The values of secret-named flags in `argv` (to mask them wherever they are echoed)."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            continue
        flag, eq, inline = arg.partition("=")
        if is_secret_name(flag):
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value:
                values.append(value)
    return values


def mask_values(text: str, values: Iterable[str]) -> str:
    """`text` with each of `values` replaced by `***`, and its URLs redacted."""
    for value in values:
        if len(value) >= 4:
            text = text.replace(value, MASK)
    return redact_text(text)


#: Variables a child may inherit, by exact name.
CHILD_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "LIBRARY_PATH",
        "CPATH",
        "CC",
        "CXX",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        # Gated model downloads need the hub token; the engine is the one process that uses it.
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    }
)

#: Families of variables a child may inherit, by prefix.
CHILD_ENV_PREFIXES = (
    "LC_",
    "XDG_",
    "PYTHON",
    "CUDA",
    "NVIDIA_",
    "NCCL_",
    "CUBLAS",
    "CUDNN",
    "TORCH",
    "PYTORCH_",
    "TRITON_",
    "VLLM_",
    "OMP_",
    "KMP_",
    "GOMP_",
    "MKL_",
    "OPENBLAS_",
    "ONEDNN_",
    "DNNL_",
    "GLOO_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "SAFETENSORS_",
    "ROCM_",
    "ROCR_",
    "HIP_",
    "ZE_",
    "SYCL_",
    "ONEAPI_",
    "CCL_",
    "I_MPI_",
    "FI_",
    "UCX_",
    "NVSHMEM_",
    "NVTE_",
    "RAY_",
    "NUMBA_",
    "TIKTOKEN_",
    "MLNODE_POC_",
    "MLNODE_ENGINE_",
)


def child_env(
    parent: Mapping[str, str],
    names: Iterable[str] = CHILD_ENV_NAMES,
    prefixes: Sequence[str] = CHILD_ENV_PREFIXES,
) -> dict[str, str]:
    """The part of `parent` a child process may see: allow-listed and not secret-named."""
    allowed = frozenset(names)
    prefix_tuple = tuple(prefixes)
    return {
        key: value
        for key, value in parent.items()
        if key in allowed or (key.startswith(prefix_tuple) and not is_secret_name(key))
    }
