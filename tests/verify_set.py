"""Verifies a security event token against a JWKS with jwcrypto (an implementation that is
not ours): reads {"token", "jwks", "audience", "issuer"} as JSON on stdin, prints the header
and the claims as JSON, exits non-zero when the signature or a claim does not check."""
import json
import sys

from jwcrypto import jwk, jwt

request = json.load(sys.stdin)
keys = jwk.JWKSet.from_json(json.dumps(request["jwks"]))
token = jwt.JWT(
    jwt=request["token"],
    key=keys,
    check_claims={"iss": request["issuer"], "aud": request["audience"]},
    expected_type="JWS",
)
print(json.dumps({"header": json.loads(token.header), "claims": json.loads(token.claims)}))
