// The bytes a provledger auditor checks (PROTOCOL.md 1-7), computed in the browser.
//
// SHA-256 and Ed25519 come from WebCrypto (crypto.subtle); where it is missing (a page
// served over plain HTTP from another host than localhost is not a secure context) from
// the vendored @noble/hashes and @noble/ed25519. Both paths refuse small-order public keys
// and non-canonical key encodings, as the node's strict verification does (PROTOCOL.md 1):
// WebCrypto's Ed25519 alone accepts a small-order key (Chromium does), so the key is first decoded and
// checked with noble's Point.

import * as ed from "../vendor/noble-ed25519/index.js";
import { sha256 as nobleSha256, sha512 as nobleSha512 } from "../vendor/noble-hashes/sha2.js";

ed.hashes.sha512 = nobleSha512;

export const RECORD_TAG = "provledger/record/v1"; // PROTOCOL.md 3
export const BLOCK_TAG = "provledger/block/v1"; // PROTOCOL.md 5
export const VOTE_TAG = "provledger/vote/v1"; // PROTOCOL.md 6
export const GENESIS_TAG = "provledger/genesis/v1"; // PROTOCOL.md 2
export const VALIDATORS_TAG = "provledger/validators/v1"; // PROTOCOL.md 9.1

const utf8 = new TextEncoder();
const subtle = globalThis.crypto && globalThis.crypto.subtle;

/** "webcrypto" or "noble": which implementation the checks use here. */
export const backend = subtle ? "webcrypto" : "noble";

// --- JCS (RFC 8785) for what signed content holds (PROTOCOL.md 1) -------------------------
// Objects, arrays, strings, integers within +-(2^53 - 1), true, false, null. Anything else
// (a fraction, an integer beyond 2^53 - 1, a lone surrogate) is refused: a record holding
// it is not valid, and its canonical form is not defined here.
export function jcs(value) {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      // RFC 8785 3.2.2.3 serializes numbers as ECMAScript does; for integers that is
      // the decimal digits. PROTOCOL.md 1 admits integers only.
      if (!Number.isSafeInteger(value)) throw new Error(`not an integer within +-(2^53-1): ${value}`);
      return String(value);
    case "string":
      // RFC 8785 3.2.2.2: strings are escaped as ECMAScript's JSON.stringify does.
      if (!value.isWellFormed()) throw new Error("string with a lone surrogate");
      return JSON.stringify(value);
    case "object":
      if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
      // RFC 8785 3.2.3: members sorted by their names' UTF-16 code units, which is what
      // Array.prototype.sort compares by default.
      return "{" + Object.keys(value).sort().map((k) => jcs(k) + ":" + jcs(value[k])).join(",") + "}";
    default:
      throw new Error(`cannot canonicalize a ${typeof value}`);
  }
}

export function jcsBytes(value) {
  return utf8.encode(jcs(value));
}

/** TAG + "\n" + JCS(payload): the bytes a signature covers or a tagged hash hashes (PROTOCOL.md 1). */
export function signingBytes(tag, payload) {
  return utf8.encode(tag + "\n" + jcs(payload));
}

// --- bytes and hashes ---------------------------------------------------------------------
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function unhex(text, length) {
  if (typeof text !== "string" || !/^(?:[0-9a-f]{2})*$/.test(text) || (length !== undefined && text.length !== 2 * length)) {
    throw new Error(`not ${length === undefined ? "" : length + " bytes of "}lowercase hex: ${String(text).slice(0, 20)}`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export async function sha256(bytes) {
  if (subtle) return new Uint8Array(await subtle.digest("SHA-256", bytes));
  return nobleSha256(bytes);
}

/** RFC 9162 2.1.1: the hash of a leaf, SHA-256(0x00 || data). */
export function leafHash(data) {
  return sha256(concat(Uint8Array.of(0), data));
}

/** RFC 9162 2.1.1: an interior node, SHA-256(0x01 || left || right). */
export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

export async function taggedHash(tag, payload) {
  return hex(await sha256(signingBytes(tag, payload)));
}

// --- the chain's documents ----------------------------------------------------------------
/** PROTOCOL.md 3: id = hex(SHA-256(0x00 || JCS(envelope with sig))). */
export async function recordId(envelope) {
  return hex(await leafHash(jcsBytes(envelope)));
}

/** PROTOCOL.md 3: the record's signature covers the envelope without "sig". */
export function recordSigningBytes(envelope) {
  const { sig, ...unsigned } = envelope;
  return signingBytes(RECORD_TAG, unsigned);
}

/** PROTOCOL.md 5: hex(SHA-256("provledger/block/v1\n" + JCS(header))). */
export function blockHash(header) {
  return taggedHash(BLOCK_TAG, header);
}

/** PROTOCOL.md 2: hex(SHA-256("provledger/genesis/v1\n" + JCS(genesis))). */
export function chainId(genesis) {
  return taggedHash(GENESIS_TAG, genesis);
}

/** PROTOCOL.md 6: what a vote signs. */
export function voteBytes(chain, height, round, step, block) {
  return signingBytes(VOTE_TAG, { chain, height, round, step, block });
}

/** PROTOCOL.md 9.1: hex(SHA-256("provledger/validators/v1\n" + JCS(the keys sorted as strings))). */
export function validatorsHash(keys) {
  return taggedHash(VALIDATORS_TAG, [...keys].sort());
}

const short = (h) => String(h).slice(0, 16) + "…";

function must(cond, reason) {
  if (!cond) throw new Error(reason);
}

/** PROTOCOL.md 6: a commit certificate for `hash` at the header's height: precommits in
 * one round by more than two thirds of `keys` (the set certifying the height), counted by
 * distinct key; every vote must be by a member and verify. Throws the reason it is not;
 * returns {signed, quorum}. */
export async function verifyCertificate(cert, header, hash, keys) {
  must(cert.height === header.height, `the certificate is for height ${cert.height}, the header is ${header.height}`);
  must(cert.block === hash, `the certificate is for block ${short(cert.block)}, not ${short(hash)}`);
  const members = new Set(keys);
  const message = voteBytes(header.chain, header.height, cert.round, "precommit", hash);
  const signed = new Set();
  for (const vote of cert.votes) {
    must(members.has(vote.validator), `a vote by ${short(vote.validator)}, not a validator of height ${header.height}`);
    must(await verifyEd25519(vote.validator, message, vote.sig),
      `the precommit of validator ${short(vote.validator)} does not verify`);
    signed.add(vote.validator);
  }
  const quorum = Math.floor((2 * members.size) / 3) + 1;
  must(signed.size >= quorum, `${signed.size} distinct validators precommitted; ${quorum} of ${members.size} are needed`);
  return { signed: signed.size, quorum };
}

/** PROTOCOL.md 9.4 steps 1 and 3: follow the membership history from the genesis set to
 * the checkpoint's height; the keys of the set certifying it (step 2 is the caller's
 * certificate check), or an Error naming the entry that fails. */
export async function followMembership(genesis, checkpoint, history) {
  const t = checkpoint.header.height;
  must(history && history.to === t, `the history runs to height ${history && history.to}, the checkpoint is at ${t}`);
  must(Array.isArray(history.changes), "the history has no list of changes");
  let keys = genesis.validators.map((v) => v.key).sort();
  let last = 0;
  for (const [i, entry] of history.changes.entries()) {
    const where = `change ${i + 1} (height ${entry.header && entry.header.height})`;
    const hash = await blockHash(entry.header);
    must(entry.hash === hash, `${where}: its header hashes to ${short(hash)}, the entry says ${short(entry.hash)}`);
    must(entry.header.chain === checkpoint.header.chain, `${where}: a header of another chain`);
    must(last < entry.header.height && entry.header.height < t,
      `${where}: not above the change before it (${last}) and below the checkpoint (${t})`);
    try {
      await verifyCertificate(entry.certificate, entry.header, hash, keys);
    } catch (e) {
      throw new Error(`${where}: ${e.message}`);
    }
    const next = entry.validators;
    must(Array.isArray(next) && next.length > 0 && next.every((k, j) => typeof k === "string" && (j === 0 || next[j - 1] < k)),
      `${where}: the new keys are not a sorted list of distinct keys`);
    must(await validatorsHash(next) === entry.header.next_validators,
      `${where}: the new keys do not hash to the header's next_validators`);
    must(await validatorsHash(keys) !== entry.header.next_validators, `${where}: the header keeps its set: not a change`);
    keys = [...next];
    last = entry.header.height;
  }
  if (t > 1) {
    const prev = history.previous;
    must(prev && prev.header, `header ${t - 1} is missing from the history`);
    const hash = await blockHash(prev.header);
    must(prev.header.height === t - 1 && hash === checkpoint.header.prev,
      `header ${t - 1} of the history is not the one the checkpoint's prev names`);
    must(prev.header.next_validators === await validatorsHash(keys),
      `header ${t - 1} names a validator set the history does not reach: a change is left out`);
  } else {
    must(history.previous === null, "a history to height 1 has no previous header");
  }
  return keys;
}

// --- RFC 9162 2.1.3.2: verifying an inclusion proof ----------------------------------------
/** The root an inclusion path leads to from `leaf` (bytes), or an Error saying why none. */
export async function rootFromInclusionProof(leaf, index, treeSize, path) {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(treeSize) || index < 0 || index >= treeSize) {
    throw new Error(`leaf index ${index} is not inside a tree of size ${treeSize}`);
  }
  let fn = index;
  let sn = treeSize - 1;
  let r = leaf;
  const half = (n) => Math.floor(n / 2); // shifts on integers past 2^31 too
  for (const step of path) {
    const p = unhex(step, 32);
    if (sn === 0) throw new Error("the path is longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new Error("the path is shorter than the tree is deep");
  return r;
}

// --- Ed25519 ------------------------------------------------------------------------------
/** Whether `sigHex` is `keyHex`'s Ed25519 signature of `message`, strictly: a small-order
 * or non-canonically encoded key never verifies. */
export async function verifyEd25519(keyHex, message, sigHex) {
  const key = unhex(keyHex, 32);
  const sig = unhex(sigHex, 64);
  let point;
  try {
    point = ed.Point.fromBytes(key, false);
  } catch (e) {
    return false;
  }
  if (point.isSmallOrder()) return false;
  if (subtle) {
    try {
      const k = await subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
      return await subtle.verify({ name: "Ed25519" }, k, sig, message);
    } catch (e) {
      if (!(e instanceof DOMException && e.name === "NotSupportedError")) return false;
      // A browser with crypto.subtle but no Ed25519 in it: noble below.
    }
  }
  return ed.verify(sig, message, key, { zip215: false });
}
