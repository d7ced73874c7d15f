"""A second Threat Bus app for scripts/threatbus-e2e.sh.

Subscribes to stix2/sighting through Threat Bus's manage socket, injects a
STIX 2.1 indicator on Threat Bus's sub port (as another app would publish
it), and waits for a sighting of that indicator: it must be valid STIX 2.1
(parsed by the stix2 library) and carry the provider's CTIM sighting, valid
CTIM by the relay's check (`--ctim-check`: examples/ctim_check.rs, built).

    python threatbus_e2e.py --manage tcp://127.0.0.1:13370 --value 192.0.2.10 \
        --ctim-check target/debug/examples/ctim_check
"""

import argparse
import json
import subprocess
import sys
import time

import stix2
import zmq


def manage(context, endpoint, request):
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.connect(endpoint)
    socket.send_string(json.dumps(request))
    reply = json.loads(socket.recv_string())
    socket.close()
    return reply


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--manage", required=True)
    parser.add_argument("--value", default="192.0.2.10")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--ctim-check", required=True)
    args = parser.parse_args()
    host = args.manage.rsplit(":", 1)[0]

    context = zmq.Context()
    reply = manage(
        context,
        args.manage,
        {"action": "subscribe", "topic": "stix2/sighting", "snapshot": 0},
    )
    assert reply.get("status") == "success", reply
    topic = reply["topic"]
    sub = context.socket(zmq.SUB)
    sub.connect(f"{host}:{reply['pub_port']}")
    sub.setsockopt_string(zmq.SUBSCRIBE, topic)
    pub = context.socket(zmq.PUB)
    pub.connect(f"{host}:{reply['sub_port']}")
    time.sleep(1.0)

    indicator = stix2.Indicator(
        pattern=f"[ipv4-addr:value = '{args.value}']",
        pattern_type="stix",
        valid_from="2026-11-23T12:00:00Z",
    )
    frame = "stix2/indicator " + indicator.serialize()
    deadline = time.monotonic() + args.timeout
    next_send = 0.0
    try:
        while time.monotonic() < deadline:
            # Resend until the relay (which may still be joining) answers.
            if time.monotonic() >= next_send:
                pub.send_string(frame)
                next_send = time.monotonic() + 2.0
            if not sub.poll(200):
                continue
            message = sub.recv_string()
            received_topic, body = message.split(" ", 1)
            sighting = stix2.parse(body, allow_custom=True)
            if sighting["type"] != "sighting" or sighting["sighting_of_ref"] != indicator.id:
                continue
            assert received_topic == topic + "sighting", received_topic
            assert sighting["spec_version"] == "2.1", sighting
            assert sighting["x_threatbus_indicator_value"] == args.value, sighting
            context_ = sighting["x_threatbus_sighting_context"]
            assert context_["type"] == "sighting", context_
            assert context_["source"] in ("C1fApp", "CyberScan"), context_
            assert context_["observables"][0]["value"] == args.value, context_
            check = subprocess.run(
                [args.ctim_check, "--sighting"], input=json.dumps(context_), text=True
            )
            assert check.returncode == 0, context_
            print(
                f"ok: sighting {sighting['id']} of {indicator.id} "
                f"({context_['source']}, last_seen {sighting['last_seen']})"
            )
            return 0
        print(f"FAIL: no sighting of {indicator.id} within {args.timeout} s", file=sys.stderr)
        return 1
    finally:
        manage(context, args.manage, {"action": "unsubscribe", "topic": topic})
        sub.close(0)
        pub.close(0)
        context.term()


if __name__ == "__main__":
    sys.exit(main())
