#!/usr/bin/env python3
"""Prints a Telegram Mini App initData string signed the way Telegram signs it.

An independent test vector for api/src/auth/init_data.rs: written from Telegram's documentation
(https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app) with the
standard library only, so that a mistake shared by our Rust signer and verifier cannot make both
agree. Run it with `python3 api/tests/vectors/init_data.py`; its output is the `PYTHON_VECTOR`
constant of the Rust tests.
"""

import hashlib
import hmac
import urllib.parse

BOT_TOKEN = "7342037142:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"

# The user JSON is written out, not produced by json.dumps: it is signed as received, byte for
# byte, and this is the shape Telegram sends (compact, raw UTF-8, slashes escaped).
USER = (
    '{"id":279058397,"first_name":"Ёлка 🎄","last_name":"Иванова","username":"yolka_test",'
    '"language_code":"ru","is_premium":true,"allows_write_to_pm":true,'
    '"photo_url":"https:\\/\\/t.me\\/i\\/userpic\\/320\\/yolka.svg"}'
)

FIELDS = [
    ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc"),
    ("user", USER),
    ("chat_instance", "-3788475317572404878"),
    ("chat_type", "private"),
    ("auth_date", "1733580000"),
    ("signature", "SignatureIsAnyFixedStringForTheHashCheck_0123456789"),
]

# secret_key = HMAC_SHA256(key="WebAppData", msg=bot_token)
secret_key = hmac.new(b"WebAppData", BOT_TOKEN.encode(), hashlib.sha256).digest()
# Every field but hash (signature included), sorted by key, "key=value", joined by "\n".
data_check_string = "\n".join(f"{key}={value}" for key, value in sorted(FIELDS))
digest = hmac.new(secret_key, data_check_string.encode(), hashlib.sha256).hexdigest()

print(urllib.parse.urlencode(FIELDS + [("hash", digest)]))
