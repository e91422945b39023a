"""Checks popbridge's Gmail traffic and the test server against Google's published contract.

1. Every request the Rust sink made (the test server's log) must match a method of the gmail v1
   discovery document shipped with google-api-python-client: HTTP method, path template
   (including the media upload paths), query parameters known to that method, enum values.
2. The official Python client, driven by that same discovery document against the test server,
   lists and reads back what the sink imported (rfc822msgid search, format=raw) and must find
   the exact bytes.
3. The official client imports messages itself (multipart and resumable): the test server must
   accept Google's own request shapes.

Usage: oracle.py BASE TOKEN USER LOG.json EXPECTED.json OUT.json
"""
import base64, glob, hashlib, io, json, os, re, sys
import googleapiclient
from googleapiclient.discovery import build_from_document
from googleapiclient.http import MediaIoBaseUpload
from google.oauth2.credentials import Credentials
from urllib.parse import urlsplit, parse_qsl, unquote

base, token, user, log_path, expected_path, out_path = sys.argv[1:7]
doc_path = glob.glob(os.path.join(os.path.dirname(googleapiclient.__file__),
                                  "discovery_cache", "documents", "gmail.v1.json"))[0]
doc = json.load(open(doc_path))

# 1. The sink's requests against the discovery document.
methods = []
def walk(res):
    for m in res.get("methods", {}).values():
        methods.append(m)
    for r in res.get("resources", {}).values():
        walk(r)
walk(doc)
def template_re(path):
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
routes = []
for m in methods:
    routes.append((m["httpMethod"], template_re("/" + doc["servicePath"] + m["path"]), m))
    for proto in m.get("mediaUpload", {}).get("protocols", {}).values():
        routes.append((m["httpMethod"], template_re(proto["path"]), m))
        # Google's upload guides also document `/upload/...?uploadType=resumable`.
        routes.append((m["httpMethod"], template_re(m["mediaUpload"]["protocols"]["simple"]["path"]), m))
top = set(doc["parameters"].keys())
checked = 0
for line in json.load(open(log_path)):
    verb, target = line.split(" ", 1)
    parts = urlsplit(target)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if verb == "PUT" and any(k == "upload_id" for k, _ in query):
        # A resumable session URI: opaque, handed out by the server.
        checked += 1
        continue
    match = [m for v, r, m in routes if v == verb and r.match(parts.path)]
    assert match, f"no discovery method for {verb} {parts.path}"
    m = match[0]
    for k, v in query:
        assert k in m["parameters"] or k in top, f"{m['id']}: unknown parameter {k}"
        spec = m["parameters"].get(k) or doc["parameters"][k]
        if "enum" in spec:
            assert v in spec["enum"], f"{m['id']}: {k}={v} not in {spec['enum']}"
        if spec.get("type") == "boolean":
            assert v in ("true", "false"), f"{m['id']}: {k}={v} is not a boolean"
        if k == "uploadType":
            assert "mediaUpload" in m and v in ("multipart", "resumable"), f"{m['id']}: uploadType={v}"
    checked += 1

# 2 and 3: the official client against the test server.
doc["rootUrl"] = base + "/"
doc["mtlsRootUrl"] = base + "/"
gmail = build_from_document(doc, credentials=Credentials(token=token))
msgs = gmail.users().messages()
def read_back(msgid):
    found = msgs.list(userId=user, q="rfc822msgid:" + msgid, includeSpamTrash=True).execute()
    ids = [m["id"] for m in found.get("messages", [])]
    assert len(ids) == 1, f"{msgid}: {len(ids)} copies"
    got = msgs.get(userId=user, id=ids[0], format="raw").execute()
    return ids[0], base64.urlsafe_b64decode(got["raw"] + "=" * (-len(got["raw"]) % 4)), got.get("labelIds", [])
for e in json.load(open(expected_path)):
    _, raw, labels = read_back(e["msgid"])
    assert hashlib.sha256(raw).hexdigest() == e["sha256"], f"{e['msgid']}: bytes differ"
    assert labels == e["labels"], f"{e['msgid']}: labels {labels}"
labels = {l["name"]: l["id"] for l in gmail.users().labels().list(userId=user).execute()["labels"]}

imported = []
for name, size, resumable in [("py-small", 3000, False), ("py-large", 600 * 1024, True)]:
    body = (f"From: py@example.org\r\nMessage-ID: <{name}@example.org>\r\nSubject: {name}\r\n\r\n").encode()
    while len(body) < size:
        body += b"official client line of text\r\n"
    media = MediaIoBaseUpload(io.BytesIO(body), mimetype="message/rfc822",
                              chunksize=256 * 1024, resumable=resumable)
    res = msgs.import_(userId=user, body={"labelIds": ["INBOX"]}, media_body=media,
                       internalDateSource="dateHeader", neverMarkSpam=False).execute()
    got = msgs.get(userId=user, id=res["id"], format="raw").execute()
    stored = base64.urlsafe_b64decode(got["raw"] + "=" * (-len(got["raw"]) % 4))
    assert stored == body, f"{name}: stored {stored[:300]!r}"
    _, raw, _ = read_back(name + "@example.org")
    assert raw == body, f"{name}: read back differs"
    imported.append({"id": res["id"], "sha256": hashlib.sha256(body).hexdigest(), "resumable": resumable})
json.dump({"checked_requests": checked, "labels": labels, "imported": imported}, open(out_path, "w"))
print("ok", checked)
