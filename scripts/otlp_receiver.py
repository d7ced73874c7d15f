#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for the end-to-end scripts: decodes every
`POST /v1/traces` with the OpenTelemetry protobuf types (the
`opentelemetry-proto` package) and appends one JSON line per span to a file:
name, kind, trace and span ids, parent id, attributes as text. Every raw body
is kept too (`<file>.raw`), so a script can check that no value or key is in
what was exported. 127.0.0.1 only.

    otlp_receiver.py --port PORT --spans FILE
"""

import argparse
import http.server
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)


def text(value):
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind else ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spans", required=True)
    args = parser.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            with open(args.spans, "a") as spans, open(args.spans + ".raw", "ab") as raw:
                raw.write(body)
                for resource_spans in export.resource_spans:
                    resource = {a.key: text(a.value) for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            spans.write(json.dumps({
                                "name": span.name,
                                "kind": span.kind,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "attributes": {a.key: text(a.value) for a in span.attributes},
                                "service": resource.get("service.name"),
                            }) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
