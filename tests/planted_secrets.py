"""A planted corpus: Python functions holding secrets and personal data in many forms.

Each :class:`Form` is one function (or, for ``source``, a file name) with one
unique, recognisable planted value that must not survive redaction: the
tests grep every file a run writes for each value, and
``benchmarks/bench_redact.py`` measures recall over the forms. Every value
is fake. Vendor-shaped tokens (GitHub, Slack, Stripe, AWS, ...) are put
together at import time from a prefix and seeded random characters, so no
token-shaped string is written in this file.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Form", "FORMS", "write_planted", "MIT"]

MIT = ("MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person "
       "obtaining a copy of this software and associated documentation files, to deal in the Software without "
       "restriction, ... and to permit persons to whom the Software is furnished to do so, subject to the following "
       "conditions:\n\nThe above copyright notice and this permission notice shall be included in all copies.")


def _rand(seed: int, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


_HEX = "0123456789abcdef"
_LOWER_ALNUM = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Form:
    """``name``: what is planted; ``value``: the secret that must disappear; ``code``: the function
    (its ``def`` name is ``name``); ``file``: the module it is written to (the ``source`` form puts
    the value in the file name)."""

    name: str
    value: str
    code: str
    file: str = "planted.py"
    pieces: tuple[str, ...] = ()

    @property
    def needles(self) -> tuple[str, ...]:
        """What must not appear anywhere: the value, and its pieces when it is split in the code."""
        return (self.value, *self.pieces)


def _f(name: str, value: str, body: str, file: str = "planted.py", pieces: tuple[str, ...] = ()) -> Form:
    return Form(name, value, body.replace("VALUE", value), file, pieces)


_JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
_JWT_NONE = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"
_AWS_ID = "AKIA" + _rand(3, 16, string.ascii_uppercase + string.digits)
_AWS_SPLIT = "AKIA" + _rand(4, 16, string.ascii_uppercase + string.digits)

FORMS: list[Form] = [
    # -- passwords on password-like names, short and low-entropy included
    _f("set_password_plain", "Lantern-Wharf-2291", '''def set_password_plain(account):
    password = "VALUE"
    account.update(password)
    return account.save()'''),
    _f("load_db_pass", "quokka7orbit", '''def load_db_pass(settings):
    DB_PASS = "VALUE"
    settings["database"] = {"user": "app", "host": "db.internal"}
    return settings, DB_PASS'''),
    _f("connect_default_pw", "Wombat!Cellar88", '''def connect_default_pw(host, user="admin", pw="VALUE"):
    session = open_session(host)
    session.login(user, pw)
    return session'''),
    _f("attribute_password", "mango-Trellis-55", '''def attribute_password(self, realm):
    self.admin_password = "VALUE"
    self.realm = realm
    return self.realm, self.admin_password'''),
    _f("login_keyword_argument", "PelicanHarbor19", '''def login_keyword_argument(client, name):
    token = client.login(user=name, password="VALUE")
    client.remember(token)
    return client.whoami()'''),
    _f("dict_password_entry", "fjord_Velvet_803", '''def dict_password_entry(host):
    cfg = {"host": host, "port": 5432, "password": "VALUE"}
    cfg["timeout"] = 30
    return cfg'''),
    _f("annotated_passwd", "Tundra3Saffron", '''def annotated_passwd(server):
    smtp_passwd: str = "VALUE"
    server.starttls()
    return server.login("mailer", smtp_passwd)'''),
    _f("compare_passphrase", "orchid-Basalt-4410", '''def compare_passphrase(entered):
    if entered.passphrase == "VALUE":
        return grant_access(entered)
    return deny_access(entered)'''),
    _f("environ_password", "Zephyr_Quill_2024", '''def environ_password(env):
    os.environ["DB_PASSWORD"] = "VALUE"
    env.refresh()
    return env.get("DB_PASSWORD")'''),
    _f("short_pwd", "kiwi42", '''def short_pwd(archive, member):
    archive.setpassword(b"kiwi")
    pwd = "VALUE"
    return archive.open(member, pwd=pwd.encode())'''),
    # -- credentials inside URLs
    _f("postgres_url", "Heron9Marble", '''def postgres_url(engine_factory):
    url = "postgresql://report_user:VALUE@db.acme-planted.io:5432/sales"
    engine = engine_factory(url)
    return engine.connect()'''),
    _f("postgres_fstring", "Cobalt-Ferret-71", '''def postgres_fstring(user, host, name):
    dsn = f"postgresql://{user}:VALUE@{host}:5432/{name}"
    conn = connect(dsn)
    return conn.cursor()'''),
    _f("redis_url_empty_user", "Maple7Lagoon", '''def redis_url_empty_user(make_client):
    client = make_client("redis://:VALUE@cache.acme-planted.io:6379/0")
    client.ping()
    return client'''),
    _f("https_basic_auth", "deployTok3nHollow", '''def https_basic_auth(repo):
    remote = "https://deploy:VALUE@git.acme-planted.io/team/" + repo
    run_git("clone", remote)
    return remote.split("/")[-1]'''),
    # -- Authorization headers
    _f("bearer_header", "bT9xQ4mZ7kL2vR8nW3pY6sJ1", '''def bearer_header(session, url):
    headers = {"Authorization": "Bearer VALUE", "Accept": "application/json"}
    response = session.get(url, headers=headers)
    return response.json()'''),
    _f("basic_header", "cGxhbnRlZDpHcmFuaXRlNTU=", '''def basic_header(request):
    request.add_header("Authorization", "Basic VALUE")
    request.add_header("User-Agent", "collector")
    return request'''),
    _f("token_header", "t0k3n8Harvest2Gale", '''def token_header(api, path):
    reply = api.call(path, headers={"Authorization": "Token VALUE"})
    reply.raise_for_status()
    return reply.content'''),
    # -- vendor tokens
    _f("npm_token_literal", "npm_" + _rand(5, 36), '''def npm_token_literal(registry):
    registry.token = "VALUE"
    registry.scope = "@acme"
    return registry.publish()'''),
    _f("npmrc_auth_token", "npm_" + _rand(6, 36), '''def npmrc_auth_token(path):
    line = "//registry.npmjs.org/:_authToken=VALUE"
    path.write_text(line + "\\n")
    return path'''),
    _f("jwt_signed", _JWT_HEADER + ".eyJzdWIiOiJwbGFudGVkLTAwNyIsInJvbGUiOiJhZG1pbiJ9." + _rand(7, 43, string.ascii_letters + string.digits + "-_"),
       '''def jwt_signed(client):
    client.session_token = "VALUE"
    client.headers["X-Session"] = client.session_token
    return client'''),
    _f("jwt_unsigned", _JWT_NONE + ".eyJzdWIiOiJwbGFudGVkLTAwOCIsImFkbWluIjp0cnVlfQ.", '''def jwt_unsigned(verifier):
    forged = "VALUE"
    return verifier.check(forged, algorithms=["none"])'''),
    _f("github_token", "gh" + "p_" + _rand(8, 36), '''def github_token(api):
    gh = api.client(auth="VALUE")
    repos = gh.list_repos("acme")
    return [r.name for r in repos]'''),
    _f("gitlab_token", "gl" + "pat-" + _rand(9, 20), '''def gitlab_token(project):
    project.private_token = "VALUE"
    project.refresh()
    return project.pipelines()'''),
    _f("slack_bot_token", "xo" + "xb-" + "123456789012-" + _rand(10, 24, _LOWER_ALNUM), '''def slack_bot_token(channel, text):
    bot = SlackClient("VALUE")
    bot.post(channel, text)
    return bot.last_message_id'''),
    _f("slack_webhook", "https://hooks.slack.com/services/T" + _rand(11, 8, string.ascii_uppercase + string.digits)
       + "/B" + _rand(12, 8, string.ascii_uppercase + string.digits) + "/" + _rand(13, 24), '''def slack_webhook(message):
    hook = "VALUE"
    payload = {"text": message}
    return post_json(hook, payload)'''),
    _f("stripe_key", "sk" + "_live_" + _rand(14, 24), '''def stripe_key(amount):
    stripe_client = Stripe(api_base="https://api.stripe.com", key="VALUE")
    charge = stripe_client.charge(amount)
    return charge.id'''),
    _f("aws_key_id", _AWS_ID, '''def aws_key_id(region):
    aws_access_key_id = "VALUE"
    client = make_client("s3", region, aws_access_key_id)
    return client.list_buckets()'''),
    _f("aws_secret_key", _rand(15, 40, string.ascii_letters + string.digits + "/+"), '''def aws_secret_key(region):
    aws_secret_access_key = "VALUE"
    session = make_session(region, aws_secret_access_key)
    return session.resource("s3")'''),
    _f("google_api_key", "AI" + "za" + _rand(16, 35, string.ascii_letters + string.digits + "_-"), '''def google_api_key(query):
    params = {"q": query, "key": "VALUE"}
    reply = fetch("https://maps.acme-planted.io/geocode", params)
    return reply["results"]'''),
    _f("sendgrid_key", "SG." + _rand(17, 22) + "." + _rand(18, 43), '''def sendgrid_key(mailer, to):
    mailer.configure(api="VALUE")
    mailer.send(to, "weekly digest")
    return mailer.outbox'''),
    _f("pypi_token", "pypi-AgEIcHlwaS5vcmc" + _rand(19, 72), '''def pypi_token(dist):
    upload(dist, username="__token__", credential="VALUE")
    return dist.name'''),
    _f("twilio_key", "SK" + _rand(20, 32, _HEX), '''def twilio_key(sms, number):
    sms.auth("VALUE")
    sms.send(number, "your code is ready")
    return sms.status'''),
    _f("telegram_bot_token", "5839201746:" + _rand(21, 35, string.ascii_letters + string.digits + "_-"), '''def telegram_bot_token(chat):
    bot = Bot("VALUE")
    bot.send_message(chat, "deployment finished")
    return bot'''),
    _f("private_key_block", _rand(22, 64, string.ascii_letters + string.digits + "+/"), '''def private_key_block():
    pem = """-----BEGIN RSA PRIVATE KEY-----
VALUE
-----END RSA PRIVATE KEY-----"""
    key = load_pem(pem)
    key.check_size(minimum=2048)
    return key'''),
    # -- high-entropy values under names that say nothing
    _f("entropy_base64_blob", _rand(23, 44, string.ascii_letters + string.digits + "+/"), '''def entropy_base64_blob(cipher):
    blob = "VALUE"
    plain = cipher.decrypt(blob)
    return plain.decode("utf-8")'''),
    _f("hex_client_secret", _rand(24, 64, _HEX), '''def hex_client_secret(oauth):
    client_secret = "VALUE"
    oauth.exchange(client_secret)
    return oauth.token'''),
    # -- secrets in comments and docstrings
    _f("comment_passphrase", "tangerine-Quokka-4417", '''def comment_passphrase(vault):
    # the passphrase is VALUE (rotate monthly)
    vault.unlock()
    return vault.items()'''),
    _f("docstring_password", "Gl4cier#Orbit", '''def docstring_password(console):
    """Open the admin console.

    The admin password is "VALUE" until the next rotation.
    """
    return console.open()'''),
    _f("comment_api_key", "ak_7Hq2Vz9Lw4Np", '''def comment_api_key(service):
    # api key: VALUE
    service.connect()
    return service.status()'''),
    _f("dsn_keyword_string", "Birch8Lantern!", '''def dsn_keyword_string(driver):
    conn = driver.connect("host=db.acme-planted.io user=app password=VALUE dbname=sales")
    return conn.cursor()'''),
    # -- keys split over adjacent string literals
    _f("split_aws_key", _AWS_SPLIT, f'''def split_aws_key(region):
    key = ("{_AWS_SPLIT[:9]}"
           "{_AWS_SPLIT[9:]}")
    return make_client("s3", region, key)''', pieces=(_AWS_SPLIT[:9], _AWS_SPLIT[9:])),
    _f("split_secret_literal", "Qv7Lm2Xp9Rt4Wn6Ks1Bz", '''def split_secret_literal(app):
    app.api_secret = ("Qv7Lm2Xp9R" "t4Wn6Ks1Bz")
    return app.start()''', pieces=("Qv7Lm2Xp9R", "t4Wn6Ks1Bz")),
    # -- addresses
    _f("ip_on_version_line", "151.101.12.34", '''def ip_on_version_line(client):
    client.connect("VALUE")  # server version 2.4 moved here
    return client.handshake()'''),
    _f("ipv6_in_string", "2607:f8b0:4005:80b::2011", '''def ipv6_in_string(sock):
    sock.connect(("VALUE", 443))
    sock.send(b"ping")
    return sock.recv(4)'''),
    _f("email_in_docstring", "rhea.planted@acme-mail.org", '''def email_in_docstring(report):
    """Send the report to VALUE every Monday."""
    return report.send()'''),
    # -- an email address in a file name: the source column
    Form("email_in_file_name", "ola.nordmann@planted-mail.net", '''def email_in_file_name(items):
    total = 0
    for item in items:
        total += item.weight * item.count
    return total''', "notes_ola.nordmann@planted-mail.net.py"),
]


def write_planted(root: Path) -> Path:
    """Write the planted forms under ``root/planted/`` (one module per file name) with an MIT license."""
    by_file: dict[str, list[str]] = {}
    for form in FORMS:
        by_file.setdefault(form.file, []).append(form.code)
    for name, codes in by_file.items():
        path = root / "planted" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("import os\n\n\n" + "\n\n\n".join(codes) + "\n")
    (root / "LICENSE").write_text(MIT)
    return root
