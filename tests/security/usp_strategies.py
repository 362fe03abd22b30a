"""Hypothesis strategies for USP traffic: client and service frames that are well-formed,
nearly well-formed (hostile JSON bodies, edge-case numbers) or garbage."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from gateway.protocol.usp import Path, RecognitionStatus, encode_binary, encode_text
from gateway.protocol.wav import wave_header

REQUEST_IDS = ("9bed34362cbb4432963cb66e84906729", "0" * 32, "A-b-1")

request_ids = st.one_of(
    st.sampled_from(REQUEST_IDS), st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True)
)
# JSON values a hostile or broken peer may send, numbers at their edges included.
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**62, 2**63, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
statuses = st.one_of(st.sampled_from([s.value for s in RecognitionStatus]), st.text(max_size=80))
phrase_bodies = st.fixed_dictionaries(
    {},
    optional={
        "RecognitionStatus": st.one_of(statuses, json_values),
        "Offset": st.one_of(numbers, json_values),
        "Duration": st.one_of(numbers, json_values),
        "DisplayText": st.one_of(st.text(max_size=60), json_values),
        "NBest": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "Confidence": st.one_of(numbers, json_values),
                        "Display": st.one_of(st.text(max_size=40), json_values),
                        "Lexical": st.one_of(st.text(max_size=40), json_values),
                    },
                ),
                max_size=3,
            ),
            json_values,
        ),
    },
)
continuations = st.builds(
    lambda offset: {"continuation": {"audio": {"streams": {"1": {"offset": offset}}}}},
    st.one_of(numbers, json_values),
)
context_bodies = st.one_of(continuations, st.dictionaries(st.text(max_size=10), json_values))


def body_text(value: Any) -> str:
    """JSON as a peer may write it: Infinity and NaN included (Python writes them)."""
    return json.dumps(value)


client_texts = st.one_of(
    st.builds(
        lambda rid, body: encode_text(Path.SPEECH_CONTEXT, rid, body_text(body)),
        request_ids,
        context_bodies,
    ),
    st.builds(
        lambda body: encode_text(Path.SPEECH_CONFIG, None, body_text(body)),
        json_values,
    ),
    st.builds(
        lambda path, rid, body: encode_text(path, rid, body),
        st.sampled_from(["telemetry", "speech.event", "audio", "x"]),
        request_ids,
        st.text(max_size=40),
    ),
    st.text(max_size=200),
)
client_binaries = st.one_of(
    st.builds(
        lambda rid, payload: encode_binary(Path.AUDIO, rid, payload),
        request_ids,
        st.one_of(
            st.just(wave_header()),
            st.just(b""),
            st.binary(max_size=400),
            st.binary(max_size=60).map(lambda tail: b"RIFF" + tail),
        ),
    ),
    st.binary(max_size=200),
)
service_paths = st.sampled_from(
    [p.value for p in Path if not p.value.startswith(("speech.c", "audio", "tele"))] + ["x"]
)
upstream_texts = st.one_of(
    st.builds(
        lambda path, rid, body: encode_text(path, rid, body_text(body)),
        service_paths,
        request_ids,
        st.one_of(phrase_bodies, json_values),
    ),
    st.builds(
        lambda rid, body: encode_text(Path.SPEECH_PHRASE, rid, body_text(body)),
        request_ids,
        phrase_bodies,
    ),
    st.builds(
        lambda rid, body: encode_text(Path.SPEECH_PHRASE, rid, body),
        request_ids,
        st.text(max_size=80),
    ),
    st.text(max_size=200),
)
