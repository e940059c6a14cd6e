"""Verifies a webhook with the Standard Webhooks reference library (not our code): reads
{"secret", "headers", "body"} as JSON on stdin, prints the verified payload as JSON, exits
non-zero when the signature does not verify."""
import json
import sys

from standardwebhooks.webhooks import Webhook

request = json.load(sys.stdin)
payload = Webhook(request["secret"]).verify(request["body"], request["headers"])
print(json.dumps(payload))
