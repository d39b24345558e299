"""Codec cost: encode + decode of a 1 MB float32 activation, as a ratio to a numpy copy.

Goal (issue 2): at most 4x a plain numpy copy of the same array. Both sides are
measured in the same run, medians over repeated rounds, warm-up excluded; the decoded
tensor is checked against the original.

    .venv/bin/python benchmarks/bench_codec.py [--quick]
"""

from __future__ import annotations

import os
import sys

import numpy as np
from _report import Row, median_time_s, report

from splitmq.wire import Activation, Tensor, decode, encode


def main() -> None:
    array = np.random.default_rng(0).random((1, 256, 256, 4), dtype=np.float32)  # 1 MiB
    message = Activation(
        request_id=os.urandom(16),
        attempt=0,
        deployment="bench",
        stage=1,
        route=(("a",), ("b",), ("c",)),
        callback="splitmq/v1/clients/bench/result",
        deadline_ms=0,
        tensors=(Tensor("activation", array),),
    )
    payload = encode(message)
    decoded = decode(payload, expect=Activation)
    if not np.array_equal(decoded.tensors[0].array, array):
        raise SystemExit("decoded tensor differs from the original")

    repeat, number = (5, 50) if "--quick" in sys.argv else (15, 200)
    copy_s = median_time_s(array.copy, repeat=repeat, number=number)
    encode_s = median_time_s(lambda: encode(message), repeat=repeat, number=number)
    decode_s = median_time_s(
        lambda: decode(payload, expect=Activation), repeat=repeat, number=number
    )
    ratio = (encode_s + decode_s) / copy_s
    report(
        "codec: 1 MiB float32 activation",
        [
            Row("wire", "codec: numpy copy of 1 MiB", f"{copy_s * 1e6:.1f} us"),
            Row(
                "wire",
                "codec: encode / decode (zero-copy)",
                f"{encode_s * 1e6:.1f} / {decode_s * 1e6:.1f} us",
            ),
            Row(
                "wire",
                "codec: (encode + decode) / copy",
                f"{ratio:.2f}x",
                "<= 4x",
                ratio <= 4.0,
                ratio,
            ),
        ],
        {
            "payload_bytes": len(payload),
            "copy_us": copy_s * 1e6,
            "encode_us": encode_s * 1e6,
            "decode_us": decode_s * 1e6,
            "ratio_to_copy": ratio,
            "goal_ratio": 4.0,
        },
    )


if __name__ == "__main__":
    main()
