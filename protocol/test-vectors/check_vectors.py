#!/usr/bin/env python3
"""Independent check of Souk's committed test vectors against SPEC.md.

Written from protocol/SPEC.md and proto/souk/v1/*.proto alone (no Rust source), using only the
Python 3.11 standard library and PyNaCl (`pip install pynacl`).

Usage:  python3 check_vectors.py [TEST_VECTORS_DIR]

TEST_VECTORS_DIR defaults to the directory of this script. The .proto files are looked up in
TEST_VECTORS_DIR/../proto/souk/v1/. Prints one line per check group (with details of failures and
skips under it) and ends with `N passed, M failed` (plus `, K skipped`). Exit status 1 if anything
failed.

Everything Bitcoin-side (secp256k1, BIP 32, base58check, RIPEMD-160, bech32/bech32m) is
implemented here in pure Python; it is self-tested against published BIP/SLIP vectors first.
"""

import hashlib
import hmac
import json
import os
import re
import struct
import sys
import unicodedata

try:
    import nacl.bindings
    import nacl.exceptions
    import nacl.signing
except ImportError:  # pragma: no cover
    sys.stderr.write("PyNaCl is required: pip install pynacl\n")
    sys.exit(2)


# ------------------------------------------------------------------------------------------------
# Constants from SPEC.md
# ------------------------------------------------------------------------------------------------

SOUK_PURPOSE = 0x534F554B  # 1397708107, "SOUK"
HARDENED = 0x80000000
MAX_ENVELOPE_BYTES = 65536
PROTOCOL_EPOCH = 1735689600
MAX_FUTURE_SKEW_SECS = 900
ENVELOPE_TAG = b"souk/v1/envelope\0"
PERMIT_TAG = b"souk/v1/rating-permit\0"
MESSAGE_TAG = b"souk/v1/message\0"
SEAL_TAG = b"souk/v1/seal\0"
ORDER_TAG = b"souk/v1/order\0"
INBOX_AUTH_TAG = b"souk/v1/inbox-auth\0"
KIND_MESSAGE = {1: "Profile", 2: "Listing", 3: "Rating", 4: "Tombstone"}

# network name -> (SLIP-44 coin type, xpub version bytes, segwit hrp)
NETWORKS = {
    "bitcoin": (0, 0x0488B21E, "bc"),
    "testnet": (1, 0x043587CF, "tb"),
    "testnet4": (1, 0x043587CF, "tb"),
    "signet": (1, 0x043587CF, "tb"),
    "regtest": (1, 0x043587CF, "bcrt"),
}


def u32_be(n):
    return struct.pack(">I", n & 0xFFFFFFFF)


def sha256(b):
    return hashlib.sha256(b).digest()


# ------------------------------------------------------------------------------------------------
# RIPEMD-160 (pure Python fallback; OpenSSL 3 may not offer it through hashlib)
# ------------------------------------------------------------------------------------------------

_RMD_R1 = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8,
    3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12,
    1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2,
    4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13,
]
_RMD_R2 = [
    5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
    6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
    15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
    8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
    12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11,
]
_RMD_S1 = [
    11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
    7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
    11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
    11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
    9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6,
]
_RMD_S2 = [
    8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
    9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
    9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
    15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
    8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11,
]
_RMD_K1 = [0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E]
_RMD_K2 = [0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000]
_M32 = 0xFFFFFFFF


def _rmd_f(j, x, y, z):
    if j < 16:
        return x ^ y ^ z
    if j < 32:
        return (x & y) | (~x & z & _M32)
    if j < 48:
        return ((x | (~y & _M32)) ^ z) & _M32
    if j < 64:
        return (x & z) | (y & ~z & _M32)
    return (x ^ (y | (~z & _M32))) & _M32


def _rol(x, n):
    return ((x << n) | (x >> (32 - n))) & _M32


def ripemd160_pure(data):
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    msg = bytes(data) + b"\x80"
    msg += b"\x00" * ((56 - len(msg)) % 64)
    msg += struct.pack("<Q", (8 * len(data)) & 0xFFFFFFFFFFFFFFFF)
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        al, bl, cl, dl, el = h
        ar, br, cr, dr, er = h
        for j in range(80):
            t = _rol((al + _rmd_f(j, bl, cl, dl) + x[_RMD_R1[j]] + _RMD_K1[j // 16]) & _M32,
                     _RMD_S1[j]) + el
            al, el, dl, cl, bl = el, dl, _rol(cl, 10), bl, t & _M32
            t = _rol((ar + _rmd_f(79 - j, br, cr, dr) + x[_RMD_R2[j]] + _RMD_K2[j // 16]) & _M32,
                     _RMD_S2[j]) + er
            ar, er, dr, cr, br = er, dr, _rol(cr, 10), br, t & _M32
        t = (h[1] + cl + dr) & _M32
        h[1] = (h[2] + dl + er) & _M32
        h[2] = (h[3] + el + ar) & _M32
        h[3] = (h[4] + al + br) & _M32
        h[4] = (h[0] + bl + cr) & _M32
        h[0] = t
    return struct.pack("<5I", *h)


def _hashlib_ripemd160_available():
    try:
        hashlib.new("ripemd160", b"")
        return True
    except (ValueError, TypeError):
        return False


HASHLIB_RIPEMD160 = _hashlib_ripemd160_available()


def ripemd160(data):
    if HASHLIB_RIPEMD160:
        return hashlib.new("ripemd160", data).digest()
    return ripemd160_pure(data)


def hash160(data):
    return ripemd160(sha256(data))


# ------------------------------------------------------------------------------------------------
# bech32 / bech32m (BIP 173 / BIP 350)
# ------------------------------------------------------------------------------------------------

BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
BECH32_CONST = 1
BECH32M_CONST = 0x2BC830A3


def _bech32_polymod(values):
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= gen[i]
    return chk


def _hrp_expand(hrp):
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp, data5, const):
    pm = _bech32_polymod(_hrp_expand(hrp) + list(data5) + [0] * 6) ^ const
    checksum = [(pm >> (5 * (5 - i))) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[d] for d in list(data5) + checksum)


def bech32_decode(s):
    """Returns (hrp, data5, const) or raises ValueError. const is BECH32_CONST or BECH32M_CONST."""
    if any(ord(c) < 33 or ord(c) > 126 for c in s):
        raise ValueError("character out of range")
    if s.lower() != s and s.upper() != s:
        raise ValueError("mixed case")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s) or len(s) > 90:
        raise ValueError("bad separator position or length")
    hrp = s[:pos]
    try:
        data = [BECH32_CHARSET.index(c) for c in s[pos + 1:]]
    except ValueError:
        raise ValueError("character not in charset") from None
    const = _bech32_polymod(_hrp_expand(hrp) + data)
    if const not in (BECH32_CONST, BECH32M_CONST):
        raise ValueError("bad checksum")
    return hrp, data[:-6], const


def convertbits(data, frombits, tobits, pad):
    acc = 0
    bits = 0
    out = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise ValueError("value out of range")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("invalid padding")
    return out


def segwit_v0_address(hrp, program):
    return bech32_encode(hrp, [0] + convertbits(program, 8, 5, True), BECH32_CONST)


def identity_address(pubkey32):
    """SPEC 'Identity addresses': bech32m, hrp souk, over the 32 bytes as 5-bit groups."""
    return bech32_encode("souk", convertbits(pubkey32, 8, 5, True), BECH32M_CONST)


def parse_identity_address(text):
    """Reader rules from SPEC: accept upper case, require bech32m, refuse other prefixes."""
    hrp, data, const = bech32_decode(text)
    if hrp != "souk":
        raise ValueError("wrong prefix %r" % hrp)
    if const != BECH32M_CONST:
        raise ValueError("bech32 (not bech32m) checksum")
    raw = bytes(convertbits(data, 5, 8, False))
    if len(raw) != 32:
        raise ValueError("not 32 bytes")
    if not ed25519_key_is_valid(raw):
        raise ValueError("not a valid non-weak ed25519 point")
    return raw


# ------------------------------------------------------------------------------------------------
# base58check
# ------------------------------------------------------------------------------------------------

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58check(payload):
    data = payload + sha256(sha256(payload))[:4]
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


# ------------------------------------------------------------------------------------------------
# secp256k1 (Jacobian coordinates, Python ints) and BIP 32 private derivation
# ------------------------------------------------------------------------------------------------

SECP_P = 2**256 - 2**32 - 977
SECP_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP_G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
          0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)


def _jac_double(pt):
    x, y, z = pt
    if y == 0 or z == 0:
        return (0, 1, 0)
    p = SECP_P
    ysq = y * y % p
    s = 4 * x * ysq % p
    m = 3 * x * x % p  # a = 0
    nx = (m * m - 2 * s) % p
    ny = (m * (s - nx) - 8 * ysq * ysq) % p
    nz = 2 * y * z % p
    return (nx, ny, nz)


def _jac_add(p1, p2):
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    p = SECP_P
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1s, z2s = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2s % p, x2 * z1s % p
    s1, s2 = y1 * z2s * z2 % p, y2 * z1s * z1 % p
    if u1 == u2:
        if s1 != s2:
            return (0, 1, 0)
        return _jac_double(p1)
    h = (u2 - u1) % p
    r = (s2 - s1) % p
    h2 = h * h % p
    h3 = h * h2 % p
    u1h2 = u1 * h2 % p
    nx = (r * r - h3 - 2 * u1h2) % p
    ny = (r * (u1h2 - nx) - s1 * h3) % p
    nz = h * z1 * z2 % p
    return (nx, ny, nz)


def secp_mul(k, point=SECP_G):
    acc = (0, 1, 0)
    addend = (point[0], point[1], 1)
    while k:
        if k & 1:
            acc = _jac_add(acc, addend)
        addend = _jac_double(addend)
        k >>= 1
    if acc[2] == 0:
        raise ValueError("point at infinity")
    zi = pow(acc[2], -1, SECP_P)
    x = acc[0] * zi * zi % SECP_P
    y = acc[1] * zi * zi * zi % SECP_P
    assert (y * y - x * x * x - 7) % SECP_P == 0
    return (x, y)


def secp_pubkey(k):
    x, y = secp_mul(k)
    return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")


def secp_decompress(pub):
    x = int.from_bytes(pub[1:], "big")
    y = pow((x * x * x + 7) % SECP_P, (SECP_P + 1) // 4, SECP_P)
    if (y * y - x * x * x - 7) % SECP_P != 0:
        raise ValueError("not on the curve")
    if (y & 1) != (pub[0] & 1):
        y = SECP_P - y
    return (x, y)


def ckd_pub(pub, chain, index):
    """BIP 32 public child derivation (non-hardened): from an xpub's key and chain code only."""
    assert not index & HARDENED
    i = hmac.new(chain, pub + u32_be(index), hashlib.sha512).digest()
    il = int.from_bytes(i[:32], "big")
    if il >= SECP_N:
        raise ValueError("invalid child (BIP 32: skip this index)")
    a = secp_mul(il)
    b = secp_decompress(pub)
    s = _jac_add((a[0], a[1], 1), (b[0], b[1], 1))
    zi = pow(s[2], -1, SECP_P)
    x, y = s[0] * zi * zi % SECP_P, s[1] * zi * zi * zi % SECP_P
    return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")


class XPriv:
    __slots__ = ("key", "chain", "depth", "parent_fp", "child", "_pub")

    def __init__(self, key, chain, depth=0, parent_fp=b"\0\0\0\0", child=0):
        self.key, self.chain, self.depth = key, chain, depth
        self.parent_fp, self.child = parent_fp, child
        self._pub = None

    @classmethod
    def master(cls, seed):
        i = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
        k = int.from_bytes(i[:32], "big")
        if not 0 < k < SECP_N:
            raise ValueError("invalid master key")
        return cls(k, i[32:])

    @property
    def pub(self):
        if self._pub is None:
            self._pub = secp_pubkey(self.key)
        return self._pub

    def ckd(self, index):
        if index & HARDENED:
            data = b"\0" + self.key.to_bytes(32, "big") + u32_be(index)
        else:
            data = self.pub + u32_be(index)
        i = hmac.new(self.chain, data, hashlib.sha512).digest()
        il = int.from_bytes(i[:32], "big")
        k = (il + self.key) % SECP_N
        if il >= SECP_N or k == 0:
            raise ValueError("invalid child (BIP 32: skip this index)")
        return XPriv(k, i[32:], self.depth + 1, hash160(self.pub)[:4], index)

    def _serialize(self, version, keydata):
        raw = (struct.pack(">I", version) + bytes([self.depth]) + self.parent_fp
               + u32_be(self.child) + self.chain + keydata)
        assert len(raw) == 78
        return base58check(raw)

    def xpub(self, version):
        return self._serialize(version, self.pub)

    def xprv(self, version=0x0488ADE4):
        return self._serialize(version, b"\0" + self.key.to_bytes(32, "big"))


def parse_path(path):
    parts = path.split("/")
    if parts[0] != "m":
        raise ValueError("path must start with m: %r" % path)
    out = []
    for p in parts[1:]:
        if p.endswith("'") or p.endswith("h") or p.endswith("H"):
            out.append(int(p[:-1]) + HARDENED)
        else:
            out.append(int(p))
    return out


class Bip32Tree:
    """BIP 32 derivation with a cache of intermediate nodes."""

    def __init__(self, seed):
        self.cache = {(): XPriv.master(seed)}

    def derive(self, path):
        idx = tuple(parse_path(path) if isinstance(path, str) else path)
        if idx in self.cache:
            return self.cache[idx]
        node = self.derive(idx[:-1]).ckd(idx[-1])
        self.cache[idx] = node
        return node


# ------------------------------------------------------------------------------------------------
# Ed25519 points (only for the "valid, non-weak key" rule) and SLIP-10
# ------------------------------------------------------------------------------------------------

ED_P = 2**255 - 19
ED_D = -121665 * pow(121666, -1, ED_P) % ED_P
ED_SQRT_M1 = pow(2, (ED_P - 1) // 4, ED_P)


def ed25519_decode_point(b):
    """RFC 8032 §5.1.3 decoding. Returns (x, y) or None."""
    if len(b) != 32:
        return None
    n = int.from_bytes(b, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    if y >= ED_P:
        return None
    u = (y * y - 1) % ED_P
    v = (ED_D * y * y + 1) % ED_P
    x2 = u * pow(v, -1, ED_P) % ED_P
    x = pow(x2, (ED_P + 3) // 8, ED_P)
    if (x * x - x2) % ED_P != 0:
        x = x * ED_SQRT_M1 % ED_P
    if (x * x - x2) % ED_P != 0:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = ED_P - x
    return (x, y)


def _ed_add(p1, p2):
    x1, y1 = p1
    x2, y2 = p2
    t = ED_D * x1 * x2 * y1 * y2 % ED_P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, ED_P) % ED_P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, ED_P) % ED_P
    return (x3, y3)


def ed25519_key_is_valid(b):
    """SPEC: 'decodes to a point on the curve that is not of small order' ([8]P != identity)."""
    pt = ed25519_decode_point(b)
    if pt is None:
        return False
    for _ in range(3):
        pt = _ed_add(pt, pt)
    return pt != (0, 1)


def slip10_ed25519(seed, path):
    i = hmac.new(b"ed25519 seed", seed, hashlib.sha512).digest()
    k, c = i[:32], i[32:]
    for idx in parse_path(path):
        if not idx & HARDENED:
            raise ValueError("SLIP-10 ed25519 supports hardened indices only")
        i = hmac.new(c, b"\0" + k + u32_be(idx), hashlib.sha512).digest()
        k, c = i[:32], i[32:]
    return k, c


def ed25519_public(secret):
    return bytes(nacl.signing.SigningKey(secret).verify_key)


def ed25519_sign(secret, msg):
    return nacl.signing.SigningKey(secret).sign(msg).signature


ED_L = 2**252 + 27742317777372353535851937790883648493
ED_IDENTITY = (0, 1)


def _ed_mul(k, pt):
    acc = ED_IDENTITY
    while k:
        if k & 1:
            acc = _ed_add(acc, pt)
        pt = _ed_add(pt, pt)
        k >>= 1
    return acc


def _ed_neg(pt):
    return ((-pt[0]) % ED_P, pt[1])


ED_B = (15112221349535400772501151409588531511454012693041857206046113283949847762202,
        46316835694926478169428394003475163141307993866256225615783033603165251855960)


def ed25519_verify(pub, msg, sig):
    """SPEC step 9, written out: S < L; R the canonical encoding of a point not of small order
    (RFC 8032 decoding refuses non-canonical y and x = 0 with the sign bit set); the key valid;
    and the cofactored equation [8]([S]B - R - [k]A) = 0. Pure Python, no shared code."""
    if len(pub) != 32 or len(sig) != 64 or not ed25519_key_is_valid(pub):
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= ED_L:
        return False
    r = ed25519_decode_point(sig[:32])
    if r is None or _ed_mul(8, r) == ED_IDENTITY:
        return False
    a = ed25519_decode_point(pub)
    k = int.from_bytes(hashlib.sha512(sig[:32] + pub + msg).digest(), "little") % ED_L
    p = _ed_add(_ed_add(_ed_mul(s, ED_B), _ed_neg(r)), _ed_neg(_ed_mul(k, a)))
    return _ed_mul(8, p) == ED_IDENTITY


def libsodium_verify(pub, msg, sig):
    """libsodium's crypto_sign_verify_detached (through PyNaCl): the cofactorless check, which
    agrees with SPEC step 9 on every honest signature."""
    try:
        nacl.signing.VerifyKey(pub).verify(msg, sig)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False


# ------------------------------------------------------------------------------------------------
# BIP 39 seed and Souk key derivation
# ------------------------------------------------------------------------------------------------

def bip39_seed(mnemonic, passphrase=""):
    phrase = " ".join(mnemonic.lower().split())
    pw = unicodedata.normalize("NFKD", phrase).encode()
    salt = ("mnemonic" + unicodedata.normalize("NFKD", passphrase)).encode()
    return hashlib.pbkdf2_hmac("sha512", pw, salt, 2048, 64)


def identity_path():
    return "m/%d'/0'/0'" % SOUK_PURPOSE


def rating_path(i):
    return "m/%d'/2'/%d'" % (SOUK_PURPOSE, i)


def escrow_account_path(coin):
    return "m/%d'/1'/%d'/0'" % (SOUK_PURPOSE, coin)


def escrow_key_path(coin, i):
    return escrow_account_path(coin) + "/%d" % i


def payout_path(coin, i):
    return "m/84'/%d'/0'/0/%d" % (coin, i)


# ------------------------------------------------------------------------------------------------
# Protobuf wire format: a tiny reader and writer
# ------------------------------------------------------------------------------------------------

class ProtoError(Exception):
    pass


def read_varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise ProtoError("varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def _skip_group(buf, pos, fnum):
    while True:
        key, pos = read_varint(buf, pos)
        f, wt = key >> 3, key & 7
        if wt == 4:
            if f != fnum:
                raise ProtoError("mismatched end group")
            return pos
        _, pos = _read_value(buf, pos, f, wt)


def _read_value(buf, pos, fnum, wt):
    if wt == 0:
        return read_varint(buf, pos)
    if wt == 1:
        if pos + 8 > len(buf):
            raise ProtoError("truncated fixed64")
        return int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
    if wt == 2:
        n, pos = read_varint(buf, pos)
        if n > len(buf) - pos:
            raise ProtoError("length-delimited field runs past the end")
        return bytes(buf[pos:pos + n]), pos + n
    if wt == 3:
        return None, _skip_group(buf, pos, fnum)
    if wt == 4:
        raise ProtoError("unexpected end group")
    if wt == 5:
        if pos + 4 > len(buf):
            raise ProtoError("truncated fixed32")
        return int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
    raise ProtoError("invalid wire type %d" % wt)


def iter_fields(buf):
    """Yields (field number, wire type, value, raw bytes of the whole field)."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = read_varint(buf, pos)
        if key > 0xFFFFFFFF:
            raise ProtoError("key out of range")
        fnum, wt = key >> 3, key & 7
        if fnum == 0:
            raise ProtoError("field number 0")
        val, pos = _read_value(buf, pos, fnum, wt)
        yield fnum, wt, val, bytes(buf[start:pos])


def enc_varint(n):
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_key(fnum, wt):
    return enc_varint((fnum << 3) | wt)


def enc_bytes_field(fnum, b):
    return enc_key(fnum, 2) + enc_varint(len(b)) + b


def to_i32(n):
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def to_i64(n):
    n &= 0xFFFFFFFFFFFFFFFF
    return n - (1 << 64) if n & (1 << 63) else n


def encode_envelope(kind, payload, signer, signature):
    """Canonical proto3 encoding of Envelope (SPEC 'Envelopes', 'Canonical encoding')."""
    out = b""
    if kind != 0:
        out += enc_key(1, 0) + enc_varint(kind)  # int32 enum: negatives sign-extend to 10 bytes
    if payload:
        out += enc_bytes_field(2, payload)
    if signer:
        out += enc_bytes_field(3, signer)
    if signature:
        out += enc_bytes_field(4, signature)
    return out


def decode_envelope(buf):
    """Standard proto3 decoding of Envelope: any order, last one wins, unknown fields skipped."""
    env = {"kind": 0, "payload": b"", "signer": b"", "signature": b""}
    names = {2: "payload", 3: "signer", 4: "signature"}
    for fnum, wt, val, _raw in iter_fields(buf):
        if fnum == 1:
            if wt != 0:
                raise ProtoError("kind: wrong wire type")
            env["kind"] = to_i32(val)
        elif fnum in names:
            if wt != 2:
                raise ProtoError("%s: wrong wire type" % names[fnum])
            env[names[fnum]] = val
    return env


def envelope_digest(kind, payload):
    return sha256(ENVELOPE_TAG + u32_be(kind) + payload)


# ------------------------------------------------------------------------------------------------
# Schema-aware payload decoding, with the schema read from proto/souk/v1/*.proto
# ------------------------------------------------------------------------------------------------

VARINT_SCALARS = {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool"}
FIXED64_SCALARS = {"fixed64", "sfixed64", "double"}
FIXED32_SCALARS = {"fixed32", "sfixed32", "float"}


class Schema:
    def __init__(self, proto_dir):
        self.messages = {}  # name -> {fnum: (type, label, field name)}
        self.enums = set()
        field_re = re.compile(r"^(repeated\s+|optional\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
        for fn in sorted(os.listdir(proto_dir)):
            if not fn.endswith(".proto"):
                continue
            stack = []
            with open(os.path.join(proto_dir, fn), encoding="utf-8") as f:
                for line in f:
                    line = line.split("//", 1)[0].strip()
                    if not line:
                        continue
                    m = re.match(r"^(message|enum|oneof|service)\s+(\w+)\s*\{", line)
                    if m:
                        stack.append((m.group(1), m.group(2)))
                        if m.group(1) == "message":
                            self.messages.setdefault(m.group(2), {})
                        elif m.group(1) == "enum":
                            self.enums.add(m.group(2))
                        continue
                    if line.startswith("}"):
                        stack.pop()
                        continue
                    if stack and stack[-1][0] in ("message", "oneof"):
                        fm = field_re.match(line)
                        if fm and fm.group(2) not in ("reserved", "option"):
                            msg = [n for k, n in stack if k == "message"][-1]
                            label = (fm.group(1) or "").strip()
                            self.messages[msg][int(fm.group(4))] = (
                                fm.group(2).split(".")[-1], label, fm.group(3))
        for msg, fields in self.messages.items():
            for fnum, (typ, _l, _n) in fields.items():
                self.wire_type(typ)  # raises on a type we do not know

    def wire_type(self, typ):
        if typ in VARINT_SCALARS or typ in self.enums:
            return 0
        if typ in FIXED64_SCALARS:
            return 1
        if typ in FIXED32_SCALARS:
            return 5
        if typ in ("string", "bytes") or typ in self.messages:
            return 2
        raise ValueError("unknown proto type %r" % typ)

    def _convert(self, typ, val):
        if typ == "string":
            try:
                return val.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtoError("string is not valid UTF-8") from None
        if typ == "bytes":
            return val
        if typ in self.messages:
            return self.decode(typ, val)
        if typ in ("int32",) or typ in self.enums:
            return to_i32(val)
        if typ == "int64":
            return to_i64(val)
        if typ == "uint32":
            return val & 0xFFFFFFFF
        if typ == "uint64":
            return val
        if typ in ("sint32", "sint64"):
            return (val >> 1) ^ -(val & 1)
        if typ == "bool":
            return val != 0
        return val

    def decode(self, name, buf):
        """Decode `buf` as message `name`. Returns {field number: value or list}. Raises
        ProtoError on a wire-format error, a wire-type mismatch on a known field, or invalid
        UTF-8 in a string (what a standard proto3 decoder refuses)."""
        fields = self.messages[name]
        out = {}
        for fnum, wt, val, _raw in iter_fields(buf):
            if fnum not in fields:
                continue  # unknown fields are skipped
            typ, label, _fname = fields[fnum]
            expected = self.wire_type(typ)
            if label == "repeated" and expected != 2 and wt == 2:  # packed
                vals = []
                pos = 0
                while pos < len(val):
                    v, pos = _read_value(val, pos, fnum, expected)
                    vals.append(self._convert(typ, v))
                out.setdefault(fnum, []).extend(vals)
                continue
            if wt != expected:
                raise ProtoError("field %d of %s: wire type %d, expected %d"
                                 % (fnum, name, wt, expected))
            v = self._convert(typ, val)
            if label == "repeated":
                out.setdefault(fnum, []).append(v)
            elif typ in self.messages and isinstance(out.get(fnum), dict):
                merged = dict(out[fnum])  # protobuf merges repeated singular messages
                for k, x in v.items():
                    merged[k] = merged[k] + x if isinstance(x, list) and k in merged else x
                out[fnum] = merged
            else:
                out[fnum] = v
        return out


def top_level_raw_fields(payload):
    """{field number: [raw field bytes, ...]} for differential comparison."""
    out = {}
    for fnum, _wt, _val, raw in iter_fields(payload):
        out.setdefault(fnum, []).append(raw)
    return out


# ------------------------------------------------------------------------------------------------
# "Accepting an envelope" (steps 1-10), with a deliberately partial step 8
# ------------------------------------------------------------------------------------------------

UNDETERMINED = "undetermined"
IDENT_RE = re.compile(r"^[a-z0-9-]+$")
TWO_YEARS_MIN = 2 * 365 * 86400   # SPEC says "2 years" without giving seconds: both readings
TWO_YEARS_MAX = 2 * 366 * 86400   # are tried, and anything in between is left undetermined.


def _one(codes):
    """Codes failing inside one rule. Order inside a rule is not specified: if more than one
    sub-check fails, the outcome is undetermined."""
    codes = [c for c in codes if c]
    if not codes:
        return None
    return codes[0] if len(set(codes)) == 1 else UNDETERMINED


def rule_identifier(s, maxlen):
    if s == "":
        return UNDETERMINED  # empty identifier: missing_field or bad_format? not specified
    return _one(["bad_format" if not (IDENT_RE.match(s) and not s.startswith("-")
                                      and not s.endswith("-")) else None,
                 "too_long" if len(s.encode()) > maxlen else None])


def rule_required_single_line(s, maxlen):
    return _one(["missing_field" if s.strip() == "" else None,
                 "control_character" if any(unicodedata.category(c) == "Cc" for c in s)
                 else None,
                 "too_long" if len(s.encode()) > maxlen else None])


def rule_key_list(keys, maxcount):
    return _one(["too_many" if len(keys) > maxcount else None,
                 "duplicate" if len(set(keys)) != len(keys) else None,
                 "bad_format" if any(not ed25519_key_is_valid(k) for k in keys) else None])


def rule_expires(created_at, expires_at, now):
    if expires_at == 0:
        return None
    if not created_at < expires_at:
        return "out_of_range"
    span = expires_at - created_at
    if span > TWO_YEARS_MAX:
        return "out_of_range"
    if span > TWO_YEARS_MIN:
        return UNDETERMINED
    if not expires_at > now:
        return "expired"
    return None


# Fields of each kind whose every step-8 rule is implemented below. If an envelope's payload
# differs from a committed *valid* payload of the same kind only in these fields, every other
# rule passes (as it does for the valid one), so the implemented rules decide step 8 exactly.
COVERED_FIELDS = {
    1: {1},                   # Profile: created_at
    2: {1, 2, 4, 17, 22},     # Listing: created_at, slug, title, accepted_moderators, expires_at
    3: {1, 2},                # Rating: created_at, order_id (also used by step 10)
    4: {1, 2},                # Tombstone: created_at, slug
}


def partial_validation(kind, msg, now):
    """Returns the step-8 code decided by the implemented rules, None, or UNDETERMINED."""
    ca = msg.get(1, 0)
    every = _one(["timestamp_before_epoch" if ca < PROTOCOL_EPOCH else None,
                  "timestamp_in_future" if ca > now + MAX_FUTURE_SKEW_SECS else None])
    numbered = []  # (rule number within the kind's ordered list, code)
    if kind == 2:
        numbered.append((1, rule_identifier(msg.get(2, ""), 100)))
        numbered.append((3, rule_required_single_line(msg.get(4, ""), 200)))
        numbered.append((13, rule_key_list(msg.get(17, []), 20)))
        numbered.append((16, rule_expires(ca, msg.get(22, 0), now)))
    elif kind == 3:
        numbered.append((1, None if len(msg.get(2, b"")) == 32 else UNDETERMINED))
    elif kind == 4:
        numbered.append((1, rule_identifier(msg.get(2, ""), 100)))
    failing = [(n, c) for n, c in numbered if c]
    first = min(failing)[1] if failing else None
    if every and first:
        return UNDETERMINED  # SPEC does not say whether "Every object" rules run first
    return every or first


def rating_permit_digest(order_id, rating_key, subject, role):
    return sha256(PERMIT_TAG + order_id + rating_key + subject + u32_be(role))


def accept(env_bytes, now, schema, valid_payloads):
    """Runs 'Accepting an envelope'. Returns (code, note); code None means accepted.
    code UNDETERMINED means step 8 could not be decided without the full validator."""
    # 1
    if len(env_bytes) > MAX_ENVELOPE_BYTES:
        return "envelope_too_large", ""
    # 2
    try:
        env = decode_envelope(env_bytes)
    except ProtoError as e:
        return "envelope_malformed", str(e)
    # 3
    if encode_envelope(env["kind"], env["payload"], env["signer"], env["signature"]) != env_bytes:
        return "envelope_not_canonical", ""
    kind, payload, signer, sig = env["kind"], env["payload"], env["signer"], env["signature"]
    # 4
    if kind not in KIND_MESSAGE:
        return "unknown_kind", "kind %d" % kind
    # 5
    if len(signer) != 32 or not ed25519_key_is_valid(signer):
        return "invalid_signer", ("len %d" % len(signer)) if len(signer) != 32 else "not a point, or weak"
    # 6
    if len(sig) != 64:
        return "invalid_signature_length", "len %d" % len(sig)
    # 7
    if schema is None:
        return UNDETERMINED, "no .proto schema found (step 7)"
    try:
        msg = schema.decode(KIND_MESSAGE[kind], payload)
    except ProtoError as e:
        return "payload_malformed", str(e)
    # 8 (partial + differential against the committed valid payloads of the same kind)
    raw = top_level_raw_fields(payload)
    best = None
    for ref in valid_payloads.get(kind, []):
        ref_raw = top_level_raw_fields(ref)
        diff = {f for f in set(raw) | set(ref_raw) if raw.get(f) != ref_raw.get(f)}
        if best is None or len(diff) < len(best):
            best = diff
    if best is None:
        return UNDETERMINED, "no valid reference payload of kind %d" % kind
    uncovered = best - COVERED_FIELDS[kind]
    if uncovered:
        return UNDETERMINED, ("payload differs from every valid vector in fields %s that this "
                              "checker does not validate" % sorted(uncovered))
    code = partial_validation(kind, msg, now)
    if code:
        return code, ("step 8; payload differs from a committed valid one only in fields %s, "
                      "whose rules are implemented here" % sorted(best))
    # 9
    if not ed25519_verify(signer, envelope_digest(kind, payload), sig):
        return "bad_signature", ""
    # 10
    if kind == 3:
        proof = msg.get(5, {})
        subject = msg.get(3, b"")
        psigner = proof.get(1, b"")
        psig = proof.get(2, b"")
        if psigner != subject:
            return "bad_rating_proof", "permit_signer != subject"
        digest = rating_permit_digest(msg.get(2, b""), signer, subject, msg.get(4, 0))
        if not ed25519_verify(psigner, digest, psig):
            return "bad_rating_proof", "permit signature does not verify"
    return None, ""


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------

class Group:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = []
        self.skipped = []
        self.notes = []

    def check(self, label, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed.append("%s%s" % (label, (": " + detail) if detail else ""))
        return ok

    def eq(self, label, got, want):
        return self.check(label, got == want, "got %r, want %r" % (got, want))

    def skip(self, label, reason):
        self.skipped.append("%s: %s" % (label, reason))

    def note(self, text):
        self.notes.append(text)


class Report:
    def __init__(self):
        self.groups = []

    def run(self, name, fn, *args):
        g = Group(name)
        self.groups.append(g)
        try:
            fn(g, *args)
        except Exception as e:  # a crash is a failure of the group, not of the script
            g.check("unexpected exception", False, "%s: %s" % (type(e).__name__, e))
        status = "FAIL" if g.failed else "ok  "
        extra = (", %d skipped" % len(g.skipped)) if g.skipped else ""
        extra += (", %d FAILED" % len(g.failed)) if g.failed else ""
        print("%s %s: %d passed%s" % (status, name, g.passed, extra))
        for f in g.failed:
            print("       FAILED  " + f)
        for s in g.skipped:
            print("       skipped " + s)
        for n in g.notes:
            print("       note    " + n)
        sys.stdout.flush()

    def summary(self):
        p = sum(g.passed for g in self.groups)
        f = sum(len(g.failed) for g in self.groups)
        s = sum(len(g.skipped) for g in self.groups)
        line = "%d passed, %d failed" % (p, f)
        if s:
            line += ", %d skipped" % s
        print(line)
        return f == 0


# ------------------------------------------------------------------------------------------------
# Check groups
# ------------------------------------------------------------------------------------------------

def check_primitives(g):
    """Self-test of the hand-written primitives against published vectors (not Souk's)."""
    for msg, want in [(b"", "9c1185a5c5e9fc54612808977ee8f548b2258d31"),
                      (b"abc", "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"),
                      (b"message digest", "5d0689ef49d2fae572b881b123a85ffa21595f36"),
                      (b"a" * 1000, None)]:
        got = ripemd160_pure(msg).hex()
        if want is not None:
            g.eq("RIPEMD-160(%r...)" % msg[:16], got, want)
        if HASHLIB_RIPEMD160:
            g.eq("RIPEMD-160 pure == hashlib (%d bytes)" % len(msg), got,
                 hashlib.new("ripemd160", msg).hexdigest())
    # BIP 173 / BIP 350 valid strings, and the checksum variants are told apart.
    for s, const in [("A12UEL5L", BECH32_CONST), ("a12uel5l", BECH32_CONST),
                     ("abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw", BECH32_CONST),
                     ("A1LQFN3A", BECH32M_CONST), ("a1lqfn3a", BECH32M_CONST),
                     ("abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx", BECH32M_CONST)]:
        try:
            hrp, data, c = bech32_decode(s)
            g.eq("bech32 decode %s" % s, c, const)
            g.eq("bech32 re-encode %s" % s, bech32_encode(hrp, data, c), s.lower())
        except ValueError as e:
            g.check("bech32 decode %s" % s, False, str(e))
    g.eq("BIP 173 P2WPKH example",
         segwit_v0_address("bc", bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")),
         "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    g.eq("HASH160 of secp256k1 G",
         hash160(secp_pubkey(1)).hex(), "751e76e8199196d454941c45d1b3a323f1433bd6")
    # SLIP-10 ed25519 test vector 1
    seed = bytes(range(16))
    k, c = slip10_ed25519(seed, "m")
    g.eq("SLIP-10 tv1 m key", k.hex(),
         "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7")
    g.eq("SLIP-10 tv1 m chain", c.hex(),
         "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb")
    k, c = slip10_ed25519(seed, "m/0'/1'")
    g.eq("SLIP-10 tv1 m/0'/1' key", k.hex(),
         "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2")
    g.eq("SLIP-10 tv1 m/0'/1' chain", c.hex(),
         "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14")
    # BIP 39 (Trezor vector 0) and BIP 32 on that seed, mixed hardened / non-hardened path.
    seed = bip39_seed("abandon abandon abandon abandon abandon abandon abandon abandon abandon "
                      "abandon abandon about", "TREZOR")
    g.eq("BIP 39 Trezor vector 0 seed", seed.hex(),
         "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d182"
         "64c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04")
    g.eq("BIP 39 Trezor vector 0 root xprv", Bip32Tree(seed).derive("m").xprv(),
         "xprv9s21ZrQH143K3h3fDYiay8mocZ3afhfULfb5GX8kCBdno77K4HiA15Tg23wpbeF1pLfs1c5SPmYHrEpTuu"
         "RhxMwvKDwqdKiGJS9XFKzUsAF")
    # BIP 32 test vector 1: a hardened then a non-hardened step.
    tree = Bip32Tree(bytes(range(16)))
    g.eq("BIP 32 tv1 m/0'/1 xpub", tree.derive("m/0'/1").xpub(0x0488B21E),
         "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq52"
         "7Hqck2AxYysAA7xmALppuCkwQ")
    g.eq("BIP 32 tv1 m/0'/1 xprv", tree.derive("m/0'/1").xprv(),
         "xprv9wTYmMFdV23N2TdNG573QoEsfRrWKQgWeibmLntzniatZvR9BmLnvSxqu53Kw1UmYPxLgboyZQaXwTCg8M"
         "SY3H2EU4pWcQDnRnrVA1xe8fs")
    # Ed25519 weak-key rule: identity and the order-2 point are weak, the base point is not.
    g.check("identity point is weak", not ed25519_key_is_valid(bytes([1]) + bytes(31)))
    g.check("order-2 point is weak", not ed25519_key_is_valid(
        bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")))
    g.check("base point is valid", ed25519_key_is_valid(
        bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")))


def check_identity(g, vectors):
    for v in vectors:
        tag = v["mnemonic"].split()[0] + "/" + str(len(v["mnemonic"].split()))
        seed = bip39_seed(v["mnemonic"], v.get("passphrase", ""))
        g.eq("%s seed" % tag, seed.hex(), v["seed_hex"])
        g.eq("%s identity_path" % tag, v["identity_path"], identity_path())
        secret, _ = slip10_ed25519(seed, identity_path())
        pub = ed25519_public(secret)
        g.eq("%s identity key" % tag, pub.hex(), v["identity_public_key_hex"])
        addr = identity_address(pub)
        g.eq("%s identity address" % tag, addr, v["identity_address"])
        g.check("%s address is 63 chars, souk1..." % tag,
                len(addr) == 63 and addr.startswith("souk1"), addr)
        g.check("%s identity key valid and not weak" % tag, ed25519_key_is_valid(pub))
        for rk in v["rating_keys"]:
            i = rk["index"]
            g.eq("%s rating %d path" % (tag, i), rk["path"], rating_path(i))
            rsec, _ = slip10_ed25519(seed, rating_path(i))
            g.eq("%s rating %d key" % (tag, i), ed25519_public(rsec).hex(), rk["public_key_hex"])
        g.eq("%s rating indices" % tag, [r["index"] for r in v["rating_keys"]], [0, 1])


def check_address_text(g, vectors):
    """Reader rules of 'Identity addresses' on the committed addresses."""
    for v in vectors:
        addr, pub = v["identity_address"], bytes.fromhex(v["identity_public_key_hex"])
        tag = addr[:12]

        def parses(text):
            try:
                return parse_identity_address(text)
            except ValueError:
                return None

        g.eq("%s parses to the key" % tag, parses(addr), pub)
        g.eq("%s upper case accepted" % tag, parses(addr.upper()), pub)
        bech32_variant = bech32_encode("souk", convertbits(pub, 8, 5, True), BECH32_CONST)
        g.check("%s bech32 (BIP 173) checksum refused" % tag, parses(bech32_variant) is None)
        other = bech32_encode("soul", convertbits(pub, 8, 5, True), BECH32M_CONST)
        g.check("%s other prefix refused" % tag, parses(other) is None)
        flipped = addr[:-1] + ("q" if addr[-1] != "q" else "p")
        g.check("%s bad checksum refused" % tag, parses(flipped) is None)


def check_networks(g, vectors):
    for v in vectors:
        tag = v["mnemonic"].split()[0] + "/" + str(len(v["mnemonic"].split()))
        tree = Bip32Tree(bip39_seed(v["mnemonic"], v.get("passphrase", "")))
        for net, n in sorted(v["networks"].items()):
            t = "%s %s" % (tag, net)
            if net not in NETWORKS:
                g.check("%s known network" % t, False, "network %r not in SPEC" % net)
                continue
            coin, version, hrp = NETWORKS[net]
            g.eq("%s coin_type" % t, n["coin_type"], coin)
            g.eq("%s escrow_account_path" % t, n["escrow_account_path"], escrow_account_path(coin))
            acct = tree.derive(escrow_account_path(coin))
            g.eq("%s escrow_xpub" % t, acct.xpub(version), n["escrow_xpub"])
            for ek in n["escrow_keys"]:
                i = ek["index"]
                g.eq("%s escrow %d path" % (t, i), ek["path"], escrow_key_path(coin, i))
                g.eq("%s escrow %d key" % (t, i), tree.derive(escrow_key_path(coin, i)).pub.hex(),
                     ek["public_key_hex"])
            for pa in n["payout_addresses"]:
                i = pa["index"]
                g.eq("%s payout %d path" % (t, i), pa["path"], payout_path(coin, i))
                pub = tree.derive(payout_path(coin, i)).pub
                g.eq("%s payout %d address" % (t, i), segwit_v0_address(hrp, hash160(pub)),
                     pa["address"])
            mpath = "m/1397708107'/1'/%d'/1'" % coin
            g.eq("%s moderation_account_path" % t, n["moderation_account_path"], mpath)
            macct = tree.derive(mpath)
            g.eq("%s moderation_xpub" % t, macct.xpub(version), n["moderation_xpub"])
            mk = n["moderation_key"]
            order_id = bytes.fromhex(mk["order_id_hex"])
            index = struct.unpack(">I", order_id[:4])[0] & 0x7FFFFFFF
            g.eq("%s moderation index" % t, mk["index"], index)
            g.eq("%s moderation key (from the xpub: public derivation)" % t,
                 ckd_pub(macct.pub, macct.chain, index).hex(), mk["public_key_hex"])
            g.eq("%s moderation key (private derivation)" % t,
                 tree.derive(mpath + "/%d" % index).pub.hex(), mk["public_key_hex"])
            g.eq("%s escrow indices" % t, [e["index"] for e in n["escrow_keys"]], [0, 1, 2])
            g.eq("%s payout indices" % t, [e["index"] for e in n["payout_addresses"]], [0, 1, 2])


def known_secrets(identity_vectors, signer_mnemonic):
    """pubkey -> (secret, description), for every mnemonic the vector files give."""
    out = {}
    mnemonics = [(v["mnemonic"], v.get("passphrase", "")) for v in identity_vectors]
    if signer_mnemonic and (signer_mnemonic, "") not in mnemonics:
        mnemonics.append((signer_mnemonic, ""))
    for m, pp in mnemonics:
        seed = bip39_seed(m, pp)
        name = "%s.../%d words%s" % (m.split()[0], len(m.split()), ", passphrase %r" % pp if pp
                                      else "")
        sec, _ = slip10_ed25519(seed, identity_path())
        out[ed25519_public(sec)] = (sec, "identity key of %s" % name)
        for i in range(8):
            sec, _ = slip10_ed25519(seed, rating_path(i))
            out.setdefault(ed25519_public(sec), (sec, "rating key %d of %s" % (i, name)))
    return out


def check_envelopes(g, doc, identity_vectors):
    seed = bip39_seed(doc["signer_mnemonic"], "")
    id_secret, _ = slip10_ed25519(seed, identity_path())
    id_pub = ed25519_public(id_secret)
    secrets = known_secrets(identity_vectors, doc["signer_mnemonic"])
    for v in doc["vectors"]:
        t = v["name"]
        kind = v["kind"]
        payload = bytes.fromhex(v["payload_hex"])
        signer = bytes.fromhex(v["signer_hex"])
        sig = bytes.fromhex(v["signature_hex"])
        digest = envelope_digest(kind, payload)
        g.eq("%s signing digest" % t, digest.hex(), v["signing_digest_hex"])
        g.check("%s signature verifies (SPEC step 9 and libsodium)" % t,
                ed25519_verify(signer, digest, sig) and libsodium_verify(signer, digest, sig))
        if signer == id_pub:
            g.eq("%s re-signed with signer_mnemonic's identity" % t,
                 ed25519_sign(id_secret, digest).hex(), v["signature_hex"])
        elif signer in secrets:
            sec, desc = secrets[signer]
            g.note("%r is signed by the %s, not by signer_mnemonic's identity (found by "
                   "trying every mnemonic in the vector files)" % (t, desc))
            g.eq("%s re-signed with %s" % (t, desc), ed25519_sign(sec, digest).hex(),
                 v["signature_hex"])
        else:
            g.skip("%s re-signing" % t, "signer key not derivable from any given mnemonic")
        env = encode_envelope(kind, payload, signer, sig)
        g.eq("%s envelope bytes" % t, env.hex(), v["envelope_hex"])
        g.eq("%s id" % t, sha256(env).hex(), v["id"])


def check_rating_permits(g, doc, identity_vectors, schema):
    secrets = known_secrets(identity_vectors, doc["signer_mnemonic"])
    n = 0
    for v in doc["vectors"]:
        if v["kind"] != 3:
            continue
        n += 1
        t = v["name"]
        payload = bytes.fromhex(v["payload_hex"])
        signer = bytes.fromhex(v["signer_hex"])
        # minimal reader: Rating.order_id=2, subject=3, role=4, proof=5 {permit_signer=1,
        # permit_signature=2}
        f = {}
        for fnum, _wt, val, _raw in iter_fields(payload):
            f[fnum] = val
        proof = {fnum: val for fnum, _wt, val, _raw in iter_fields(f.get(5, b""))}
        order_id, subject, role = f.get(2, b""), f.get(3, b""), f.get(4, 0)
        digest = rating_permit_digest(order_id, signer, subject, role)
        g.eq("%s permit digest" % t, digest.hex(), v.get("permit_digest_hex"))
        g.eq("%s permit_signer == subject" % t, proof.get(1), subject)
        g.check("%s permit signature verifies" % t,
                ed25519_verify(subject, digest, proof.get(2, b"")))
        if subject in secrets:
            sec, desc = secrets[subject]
            g.eq("%s permit re-signed with %s" % (t, desc), ed25519_sign(sec, digest),
                 proof.get(2))
        else:
            g.skip("%s permit re-signing" % t, "subject key not derivable from given mnemonics")
        if schema is not None:
            msg = schema.decode("Rating", payload)
            g.check("%s schema decode agrees with minimal reader" % t,
                    msg.get(2) == order_id and msg.get(3) == subject and msg.get(4) == role)
    g.check("at least one rating vector", n > 0)


def valid_payloads_by_kind(doc):
    out = {}
    for v in doc["vectors"]:
        out.setdefault(v["kind"], []).append(bytes.fromhex(v["payload_hex"]))
    return out


def check_valid_acceptance(g, doc, schema):
    refs = valid_payloads_by_kind(doc)
    for v in doc["vectors"]:
        code, note = accept(bytes.fromhex(v["envelope_hex"]), doc["now"], schema, refs)
        if code == UNDETERMINED:
            g.skip(v["name"], note)
        else:
            g.check("%s accepted at now" % v["name"], code is None, "refused: %s %s"
                    % (code, note))
    # The unknown-field vector: the extra field survives and is unknown to the schema.
    for v in doc["vectors"]:
        if "unknown" in v["name"] and schema is not None:
            payload = bytes.fromhex(v["payload_hex"])
            msgname = KIND_MESSAGE[v["kind"]]
            unknown = [f for f in top_level_raw_fields(payload)
                       if f not in schema.messages[msgname]]
            g.check("%s carries a field unknown to %s" % (v["name"], msgname), bool(unknown))


STRUCTURAL = {"envelope_too_large", "envelope_malformed", "envelope_not_canonical",
              "unknown_kind", "invalid_signer", "invalid_signature_length", "bad_signature"}


def check_invalid(g, doc, valid_doc, schema, structural):
    refs = valid_payloads_by_kind(valid_doc)
    for v in doc["vectors"]:
        want = v["code"]
        if (want in STRUCTURAL) != structural:
            continue
        t = "%s (%s)" % (v["name"], want)
        env_bytes = bytes.fromhex(v["envelope_hex"])
        code, note = accept(env_bytes, v["now"], schema, refs)
        if code == UNDETERMINED:
            g.skip(t, "first failing code needs the full validator: " + note)
        else:
            g.eq("%s first failing check" % t, code, want)
        if structural:
            continue
        if code != UNDETERMINED and note:
            g.note("%s -> %s (%s)" % (v["name"], code, note))
        # Extra targeted checks for codes that come from payload validation or the proof.
        env = decode_envelope(env_bytes)
        kind, payload = env["kind"], env["payload"]
        if want == "payload_malformed":
            for other in sorted(KIND_MESSAGE):
                if other != kind and schema is not None:
                    try:
                        schema.decode(KIND_MESSAGE[other], payload)
                        g.check("%s payload decodes as %s instead" % (t, KIND_MESSAGE[other]),
                                True)
                    except ProtoError:
                        pass
            continue
        g.check("%s signature verifies (so only the intended rule fails)" % t,
                ed25519_verify(env["signer"], envelope_digest(kind, payload), env["signature"]))
        f = {}
        for fnum, _wt, val, _raw in iter_fields(payload):
            f[fnum] = val
        if want == "timestamp_in_future":
            g.check("%s created_at > now + 900" % t, f.get(1, 0) > v["now"] + MAX_FUTURE_SKEW_SECS,
                    "created_at %s" % f.get(1))
        elif want == "too_long" and kind == 2:
            g.check("%s title over 200 bytes" % t, len(f.get(4, b"")) > 200)
        elif want == "expired" and kind == 2:
            g.check("%s 0 < expires_at <= now" % t, 0 < f.get(22, 0) <= v["now"])


# ------------------------------------------------------------------------------------------------

def hkdf_sha256(salt, ikm, info, length):
    """RFC 5869."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def check_messages(g, doc, identity_vectors):
    """SPEC 'Private messages': signature, X25519 form of the recipient, HKDF, XChaCha20-Poly1305,
    the SealedMessage bytes, its id and the order id; then the inbox challenge answer."""
    secrets = known_secrets(identity_vectors, None)
    for v in doc["vectors"]:
        t = v["name"]
        sender = bytes.fromhex(v["sender_hex"])
        recipient = bytes.fromhex(v["recipient_hex"])
        payload = bytes.fromhex(v["payload_hex"])
        sig = bytes.fromhex(v["signature_hex"])
        digest = sha256(MESSAGE_TAG + payload)
        g.eq("%s message digest" % t, digest.hex(), v["message_digest_hex"])
        g.check("%s signature verifies (SPEC step 9 and libsodium)" % t,
                ed25519_verify(sender, digest, sig) and libsodium_verify(sender, digest, sig))
        if sender in secrets:
            g.eq("%s re-signed by the sender" % t,
                 ed25519_sign(secrets[sender][0], digest).hex(), v["signature_hex"])
        else:
            g.skip("%s re-signing" % t, "sender key not derivable from identity.json")
        signed = enc_bytes_field(1, payload) + enc_bytes_field(2, sender) + enc_bytes_field(3, sig)
        g.eq("%s SignedMessage bytes" % t, signed.hex(), v["signed_hex"])
        rx = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(recipient)
        g.eq("%s recipient X25519 form" % t, rx.hex(), v["recipient_x25519_hex"])
        e = bytes.fromhex(v["ephemeral_secret_hex"])
        epub = nacl.bindings.crypto_scalarmult_base(e)
        g.eq("%s ephemeral public key" % t, epub.hex(), v["ephemeral_public_hex"])
        shared = nacl.bindings.crypto_scalarmult(e, rx)
        g.eq("%s shared secret (sender side)" % t, shared.hex(), v["shared_secret_hex"])
        if recipient in secrets:
            rsec = secrets[recipient][0]
            full = nacl.bindings.crypto_sign_seed_keypair(rsec)[1]
            rsk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(full)
            g.eq("%s shared secret (recipient side)" % t,
                 nacl.bindings.crypto_scalarmult(rsk, epub).hex(), v["shared_secret_hex"])
        else:
            g.skip("%s recipient side" % t, "recipient key not derivable from identity.json")
        key = hkdf_sha256(SEAL_TAG, shared, epub + rx + recipient, 32)
        nonce = bytes.fromhex(v["nonce_hex"])
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            signed, recipient + epub, nonce, key)
        g.eq("%s ciphertext" % t, ct.hex(), v["ciphertext_hex"])
        pt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, recipient + epub, nonce, key)
        g.eq("%s decrypts to the signed message" % t, pt.hex(), v["signed_hex"])
        sealed = (enc_bytes_field(1, recipient) + enc_bytes_field(2, epub)
                  + enc_bytes_field(3, nonce) + enc_bytes_field(4, ct))
        g.eq("%s SealedMessage bytes" % t, sealed.hex(), v["sealed_hex"])
        g.eq("%s sealed id" % t, sha256(sealed).hex(), v["sealed_id"])
        if v["order_id_hex"] is not None:
            g.eq("%s order id" % t, sha256(ORDER_TAG + signed).hex(), v["order_id_hex"])
        tampered = bytearray(ct)
        tampered[0] ^= 1
        try:
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                bytes(tampered), recipient + epub, nonce, key)
            g.check("%s tampered ciphertext refused" % t, False)
        except nacl.exceptions.CryptoError:
            g.check("%s tampered ciphertext refused" % t, True)
    a = doc["inbox_auth"]
    recipient = bytes.fromhex(a["recipient_hex"])
    digest = sha256(INBOX_AUTH_TAG + bytes.fromhex(a["challenge_hex"]) + recipient)
    g.eq("inbox auth digest", digest.hex(), a["digest_hex"])
    g.check("inbox auth signature verifies (strict)",
            ed25519_verify(recipient, digest, bytes.fromhex(a["signature_hex"])))


def check_signature_rule(g, doc):
    for v in doc["vectors"]:
        pub = bytes.fromhex(v["public_key_hex"])
        digest = bytes.fromhex(v["digest_hex"])
        sig = bytes.fromhex(v["signature_hex"])
        g.check("%s: SPEC step 9 says %s" % (v["name"], v["accepted"]),
                ed25519_verify(pub, digest, sig) == v["accepted"])
        g.check("%s: libsodium says %s" % (v["name"], v["libsodium"]),
                libsodium_verify(pub, digest, sig) == v["libsodium"])


def main():
    vdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    proto_dir = os.path.join(vdir, os.pardir, "proto", "souk", "v1")

    def load(name):
        with open(os.path.join(vdir, name), encoding="utf-8") as f:
            return json.load(f)

    identity = load("identity.json")["vectors"]
    envelopes = load("envelopes.json")
    invalid = load("invalid-envelopes.json")
    messages = load("messages.json")
    signature_rule = load("signature-rule.json")
    schema = Schema(proto_dir) if os.path.isdir(proto_dir) else None

    r = Report()
    r.run("primitives self-test (RIPEMD-160%s, bech32/bech32m, SLIP-10, BIP 39/32, ed25519 "
          "weak keys)" % ("" if HASHLIB_RIPEMD160 else " pure-Python only"), check_primitives)
    r.run("identity.json: seeds, identity keys, souk1 addresses, rating keys",
          check_identity, identity)
    r.run("identity.json: address reader rules (upper case, bech32m only, prefix)",
          check_address_text, identity)
    r.run("identity.json: escrow xpubs, escrow keys, payout addresses per network",
          check_networks, identity)
    r.run("envelopes.json: digests, signatures, re-signing, envelope bytes, ids",
          check_envelopes, envelopes, identity)
    r.run("envelopes.json: rating permit digest and signature",
          check_rating_permits, envelopes, identity, schema)
    r.run("envelopes.json: every vector accepted by the acceptance steps at now",
          check_valid_acceptance, envelopes, schema)
    r.run("invalid-envelopes.json: structural codes (steps 1-6, 9)",
          check_invalid, invalid, envelopes, schema, True)
    r.run("invalid-envelopes.json: payload / validation / proof codes (steps 7, 8, 10)",
          check_invalid, invalid, envelopes, schema, False)
    r.run("messages.json: signatures, X25519, HKDF, XChaCha20-Poly1305, sealed bytes, ids",
          check_messages, messages, identity)
    r.run("signature-rule.json: the cofactored rule, and where libsodium parts from it",
          check_signature_rule, signature_rule)
    ok = r.summary()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
