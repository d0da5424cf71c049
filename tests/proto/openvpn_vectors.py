"""Test vectors taken from OpenVPN's own unit tests (OpenVPN/openvpn, commit ab630a14).

Each constant names the file and the C identifier it was taken from. They are
data produced by openvpn, used here to check that our codecs agree with it.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

# tests/unit_tests/openvpn/test_pkt.c: static_key (the <tls-auth> block)
PKT_STATIC_KEY = """\
-----BEGIN OpenVPN Static key V1-----
37268ea8f95d7f71f9fb8fc03770c460
daf714a483d815c013ce0a537efc18f2
8f4f172669d9e6a413bac6741d8ea054
00f49b7fd6326470f23798c606bf53d4
de63ebc64ec59d57ce5d04d5b62e68b5
3ca6e5354351097fa370446c4d269f18
7bb6ae54af2dc70ff7317fe2f8754b82
82aad4202f9fa42c8640245d883e2c54
a0c1c489a036cf3a8964d8d289c1583b
9447c262b1da5fd167a5d27bd5ac5143
17bc2343a31a2efc38dd920d910375f5
1c2e27f3afd36c49269da079f7ce466e
bb0f9ad13e9bbb4665974e6bc24b513c
5700393bf4a3e7f967e2f384069ac8a8
e78b18b15604993fd16515cce9c0f3e4
2b4126b999005ade802797b0eeb8b9e6
-----END OpenVPN Static key V1-----
"""

# test_pkt.c: client_reset_v2_none
CLIENT_RESET_V2_NONE = bytes.fromhex("38 6891923fa3103437 00 00000000")

# test_pkt.c: client_reset_v2_tls_auth (SHA1, the server checks it with key-direction 0)
CLIENT_RESET_V2_TLS_AUTH = bytes.fromhex(
    "38de694c5c7bfba274 93537c1ded4e781529ae7cfe4b8c6d6b2b51f05a 0000000161d3bf6c 00 00000000"
)

# test_pkt.c: client_reset_v2_tls_crypt (the server, is_server=True, unwraps it)
CLIENT_RESET_V2_TLS_CRYPT = bytes.fromhex(
    "38f419cb12d1f9e48f 0000000161d3f8e1"
    "330206f56802be44fbed905064e3db43416bec5e526719462b7eb90c96defc9b"
    "05c44879f7"
)

# test_pkt.c: client_ack_tls_auth_randomid (a CONTROL_V1 carrying a TLS ClientHello)
CLIENT_CONTROL_TLS_AUTH = bytes.fromhex(
    "2014014ebc80c6142b7bc876fbc52e27b1c507355bb6006bae71ba4e3800000003"
    "61d3ff530000000001160301010c0100010803038caaac3a1a07bde7b750069b94"
    "0c344b5a35cac479bdc909b07bd9eebb7de725203938e2183336149f34f0445996"
    "8d0ed24776648859e93803979698 45fbf5ff2300321302130313 01c02cc03000"
    "9fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009"
    "c0130033 00ff0100008d000b000403000102000a000c000a001d0017001e0019"
    "00180016000000170000000d0030002e040305030603080708080809080a080b08"
    "0408050806040105010601030302030301020103020202040205020602002b0005"
    "040304030300 2d00020101003300260024001d00200ec97aff58db56f640d1eddb"
    "9181d6ef83868ab23d88923fd8519cd62656336b"
)

# test_pkt.c: client_ack_123_none_random_id (ACK_V1 acking 0, 1, 2)
CLIENT_ACK_123_NONE = bytes.fromhex(
    "28 aeb9afe1f01d79c8 03 00000000 00000001 00000002 dd85db535623b02e"
)

# test_pkt.c: client_control_with_ack (truncated TLS payload)
CLIENT_CONTROL_WITH_ACK = bytes.fromhex(
    "20 7819bf2ebcd19a45 01 00000000 eafebfa4418ae31b 00000001 160301"
)

# tests/unit_tests/openvpn/test_tls_crypt.c: test_tls_crypt_secure_reneg_key.
# Dynamic tls-crypt with an EKM mocked to 256 bytes of 0xba, client side, packet-id
# (1, time 0), plaintext "1234567890": packet-id ‖ tag ‖ ciphertext.
DYN_TLS_CRYPT_EKM = b"\xba" * 256
DYN_TLS_CRYPT_PLAINTEXT = b"1234567890"
DYN_TLS_CRYPT_EXPECTED = bytes.fromhex(
    "0000000100000000e319277f1c8d6e6a7796a855337b9cfb56e1f13a870e6647"
    "dfa195c92c17a015ba4967a11d55ea1a06a7"
)

# test_tls_crypt.c: test_server_key (bytes 0x00..0x7f)
TLS_CRYPT_V2_SERVER_KEY = """\
-----BEGIN OpenVPN tls-crypt-v2 server key-----
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v
MDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5f
YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8=
-----END OpenVPN tls-crypt-v2 server key-----
"""

# test_tls_crypt.c: test_client_key (Kc = bytes 0x00..0xff, timestamp metadata)
TLS_CRYPT_V2_CLIENT_KEY = """\
-----BEGIN OpenVPN tls-crypt-v2 client key-----
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v
MDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5f
YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6P
kJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/
wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v
8PHy8/T19vf4+fr7/P3+/xd9pcB0qUYZsWvkrLcfGmzPJPM8a7r0mEWdXwbDadSV
LHg5bv2TwlmPR3HgaMr8o9LTh9hxUTkrH3S0PfKRNwcso86ua/dBFTyXsM9tg4aw
3dS6ogH9AkaT+kRRDgNcKWkQCbwmJK2JlfkXHBwbAtmn78AkNuho6QCFqCdqGab3
zh2vheFqGMPdGpukbFrT3rcO3VLxUeG+RdzXiMTCpJSovFBP1lDkYwYJPnz6daEh
j0TzJ3BVru9W3CpotdNt7u09knxAfpCxjtrP3semsDew/gTBtcfQ/OoTFyFHnN5k
RZ+q17SC4nba3Pp8/Fs0+hSbv2tJozoD8SElFq7SIWJsciTYh8q8f5yQxjdt4Wxu
/Z5wtPCAZ0tOzj4ItTI77fBOYRTfEayzHgEr
-----END OpenVPN tls-crypt-v2 client key-----
"""

# test_tls_crypt.c: test_client_key_metadata (user metadata, base64 "AABBCCDD")
TLS_CRYPT_V2_CLIENT_KEY_METADATA = """\
-----BEGIN OpenVPN tls-crypt-v2 client key-----
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v
MDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5f
YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6P
kJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/
wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v
8PHy8/T19vf4+fr7/P3+/2ntp1WCqhcLjJQY/igkjNt3Yb6i0neqFkfrOp2UCDcz
6RSJtPLZbvOOKUHk2qwxPYUsFCnz/IWV6/ZiLRrabzUpS8oSN1HS6P7qqAdrHKgf
hVTHasdSf2UdMTPC7HBgnP9Ll0FhKN0h7vSzbbt7QM7wH9mr1ecc/Mt0SYW2lpwA
aJObYGTyk6hTgWm0g/MLrworLrezTqUHBZzVsu+LDyqLWK1lzJNd66MuNOsGA4YF
fbCsDh8n3H+Cw1k5YNBZDYYJOtVUgBWXheO6vgoOmqDdI0dAQ3hVo9DE+SkCFjgf
l4FY2yLEh9ZVZZrl1eD1Owh/X178CkHrBJYl9LNQSyQEKlDGWwBLQ/pY3qtjctr3
pV62MPQdBo+1lcsjDCJVQA6XUyltas4BKQ==
-----END OpenVPN tls-crypt-v2 client key-----
"""


def run_openvpn(cwd: Path, *args: str) -> None:
    """Run the real openvpn binary (key generation, self-tests) and insist it succeeds."""
    subprocess.run(["openvpn", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


needs_openvpn = pytest.mark.skipif(shutil.which("openvpn") is None, reason="needs openvpn")
