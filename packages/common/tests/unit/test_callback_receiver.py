import json

import httpx

from mlnode.common.testing.callback_receiver import CallbackReceiver


def test_records_posts_without_content_type_and_filters_by_path(tmp_path):
    journal = tmp_path / "callbacks.jsonl"
    with CallbackReceiver(journal=journal) as receiver:
        # The network node's Go client and our nodes may send JSON with no Content-Type.
        assert httpx.post(f"{receiver.url}/generated", content=b'{"nonces": [1, 2]}').is_success
        assert httpx.post(f"{receiver.url}/validated", json={"n_invalid": 0}).is_success

        generated = httpx.get(f"{receiver.url}/received", params={"path": "/generated"}).json()
        assert [item["body"] for item in generated] == [{"nonces": [1, 2]}]
        assert [i["path"] for i in receiver.received()] == ["/generated", "/validated"]

        assert httpx.delete(f"{receiver.url}/received").is_success
        assert httpx.get(f"{receiver.url}/received").json() == []
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/generated", "/validated"]


def test_refuses_bodies_that_are_not_json():
    with CallbackReceiver() as receiver:
        answer = httpx.post(f"{receiver.url}/generated", content=b"not json")
        assert answer.status_code == 400
        assert "not JSON" in answer.json()["error"]
        assert receiver.received() == []


def test_unknown_routes_are_404():
    with CallbackReceiver() as receiver:
        assert httpx.get(f"{receiver.url}/nope").status_code == 404
        assert httpx.delete(f"{receiver.url}/generated").status_code == 404
        assert httpx.get(f"{receiver.url}/livez").json() == {"status": "ok"}
