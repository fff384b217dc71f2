// The checks on a record or block page (README "Explorer"), made by the browser on the
// documents it fetches from the node's /v1 API: never on values rendered into the page.
// Each check is an element data-check="NAME"; it ends data-result="pass" or "fail" (with
// the reason). The section gets data-done="true" when every check has a result.

import * as v from "./verify.js";

const box = document.getElementById("checks");
const fetched = [];

async function get(url) {
  const r = await fetch(url, { headers: { accept: "application/json" }, cache: "no-store" });
  if (!r.ok) throw new Error(`${url} answered HTTP ${r.status}`);
  const doc = await r.json();
  fetched.push(url);
  return doc;
}

function item(name) {
  return box.querySelector(`[data-check="${name}"]`);
}

function show(name, pass, detail) {
  const el = item(name);
  if (!el) return;
  el.dataset.result = pass ? "pass" : "fail";
  el.querySelector(".badge").textContent = pass ? "pass" : "fail";
  el.querySelector(".detail").textContent = detail;
}

// Run one check: `test` returns the detail of a pass or throws the reason of a failure.
async function check(name, test) {
  try {
    show(name, true, await test());
  } catch (e) {
    show(name, false, e instanceof Error ? e.message : String(e));
  }
}

function must(cond, reason) {
  if (!cond) throw new Error(reason);
}

const short = (h) => String(h).slice(0, 16) + "…";

/** What the membership check found: the set `keys` certifying the checkpoint's height. */
function membershipDetail(checkpoint, history, keys) {
  const n = history.changes.length;
  const height = checkpoint.header.height;
  return (n === 0 ? `no change since the genesis: its ${keys.length} validators certify height ${height}`
    : `${n} change${n === 1 ? "" : "s"} followed from the genesis set, each certified by the set before it: ` +
      `${keys.length} validators certify height ${height}`) +
    (height > 1 ? `; header ${height - 1} names that set` : "");
}

/** PROTOCOL.md 6: precommits for the block by more than two thirds of the set the
 * membership history reached (`keys`; null when it did not verify). */
async function certificateCheck(checkpoint, keys) {
  must(keys !== null, `the validator set of height ${checkpoint.header.height} is unknown: the membership history does not verify`);
  const cert = checkpoint.certificate;
  const { signed, quorum } = await v.verifyCertificate(cert, checkpoint.header, await v.blockHash(checkpoint.header), keys);
  return `${signed} of ${keys.length} validators precommitted in round ${cert.round} (${quorum} needed); every signature verifies`;
}

/** The membership check, then the certificate check against the set it reached. */
async function setChecks(genesis, checkpoint, history) {
  let keys = null;
  await check("membership", async () => {
    // PROTOCOL.md 9.4 steps 1 and 3: the history of GET /v1/membership, from the genesis set.
    keys = await v.followMembership(genesis, checkpoint, history);
    return membershipDetail(checkpoint, history, keys);
  });
  await check("certificate", () => certificateCheck(checkpoint, keys));
}

async function chainCheck(genesis, ...named) {
  const id = await v.chainId(genesis);
  for (const [what, chain] of named) must(chain === id, `${what} names chain ${short(chain)}, the genesis gives ${short(id)}`);
  return `${id} (SHA-256 of the tagged JCS genesis) is the chain the ${named.map((n) => n[0]).join(" and the ")} name`;
}

async function blockHashCheck(checkpoint) {
  const hash = await v.blockHash(checkpoint.header);
  must(hash === checkpoint.hash, `the header hashes to ${short(hash)}, the checkpoint says ${short(checkpoint.hash)}`);
  return `${hash} for height ${checkpoint.header.height}`;
}

async function recordChecks(id) {
  const [genesis, found, proof] = await Promise.all([
    get("/v1/genesis"), get(`/v1/records/${id}`), get(`/v1/records/${id}/proof`),
  ]);
  const env = found.record;
  const cp = proof.checkpoint;
  const history = await get(`/v1/membership?to=${cp.header.height}`);
  const computed = await v.recordId(env);
  await check("chain_id", () => chainCheck(genesis, ["record", env.chain], ["checkpoint", cp.header.chain]));
  await check("record_id", async () => {
    must(computed === id, `the envelope hashes to ${short(computed)}, not the record's id ${short(id)}`);
    return `${computed} = SHA-256(0x00 || JCS(envelope))`;
  });
  await check("signature", async () => {
    must(await v.verifyEd25519(env.signer, v.recordSigningBytes(env), env.sig),
      `the signature does not verify for key ${short(env.signer)}`);
    return `Ed25519 by ${short(env.signer)} over "${v.RECORD_TAG}\\n" + JCS(envelope without sig)`;
  });
  await check("inclusion", async () => {
    must(proof.tree_size === cp.header.log_size, `the proof is for a tree of ${proof.tree_size}, the checkpoint has ${cp.header.log_size}`);
    const root = v.hex(await v.rootFromInclusionProof(v.unhex(computed, 32), proof.index, proof.tree_size, proof.path));
    must(root === cp.header.log_root, `the path from leaf ${proof.index} leads to ${short(root)}, not the log root ${short(cp.header.log_root)}`);
    return `leaf ${proof.index} of ${proof.tree_size}: ${proof.path.length} hashes reach the log root of block ${cp.header.height}`;
  });
  await check("block_hash", () => blockHashCheck(cp));
  await setChecks(genesis, cp, history);
}

async function blockChecks(height) {
  const [genesis, cp, history] = await Promise.all([
    get("/v1/genesis"), get(`/v1/checkpoint/${height}`), get(`/v1/membership?to=${height}`),
  ]);
  await check("chain_id", () => chainCheck(genesis, ["header", cp.header.chain]));
  await check("block_hash", () => blockHashCheck(cp));
  await setChecks(genesis, cp, history);
}

async function main() {
  for (const el of box.querySelectorAll("[data-check]")) {
    el.querySelector(".badge").textContent = "checking";
    el.querySelector(".detail").textContent = "";
  }
  try {
    if (box.dataset.kind === "record") await recordChecks(box.dataset.id);
    else await blockChecks(box.dataset.height);
  } catch (e) {
    // A document could not be fetched or read: every check still open fails with the reason.
    for (const el of box.querySelectorAll('[data-result="pending"]')) show(el.dataset.check, false, e.message);
  }
  const all = box.querySelectorAll("[data-check]");
  const passed = box.querySelectorAll('[data-result="pass"]').length;
  box.querySelector(".summary").textContent =
    `${passed} of ${all.length} checks pass (${v.backend === "webcrypto" ? "WebCrypto" : "noble"} SHA-256 and Ed25519).`;
  const list = box.querySelector(".fetched");
  for (const url of fetched) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = url;
    a.textContent = url;
    li.append(a);
    list.append(li);
  }
  box.dataset.backend = v.backend;
  box.dataset.done = "true";
}

if (box) main();
