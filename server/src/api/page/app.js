// The status page of a Souk index server. It reads only the public API (/api/v1/status,
// /api/v1/network, /metrics, /api/v1/listings/search) and trusts none of it for search results:
// each hit's envelope is checked here (its SHA-256 id and its Ed25519 signature, with
// WebCrypto) and what is shown is decoded from the signed bytes. protocol/SPEC.md defines them.
"use strict";

const DOMAIN = new TextEncoder().encode("souk/v1/envelope\0");
const KIND_LISTING = 2;

const $ = (id) => document.getElementById(id);
const text = (id, value) => { $(id).textContent = value; };

// --- protobuf, just enough: varints and length-delimited fields --------------------------
function readVarint(bytes, at) {
  let value = 0n, shift = 0n;
  for (let i = 0; i < 10; i++) {
    if (at.i >= bytes.length) throw new Error("truncated varint");
    const b = bytes[at.i++];
    value |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return value;
    shift += 7n;
  }
  throw new Error("varint too long");
}

// Fields of a message: {number: [values]}; varints as BigInt, length-delimited as Uint8Array.
function fields(bytes) {
  const out = {};
  const at = { i: 0 };
  while (at.i < bytes.length) {
    const key = Number(readVarint(bytes, at));
    const number = key >>> 3, wire = key & 7;
    let value;
    if (wire === 0) value = readVarint(bytes, at);
    else if (wire === 2) {
      const length = Number(readVarint(bytes, at));
      if (at.i + length > bytes.length) throw new Error("truncated field");
      value = bytes.subarray(at.i, at.i + length);
      at.i += length;
    } else if (wire === 1) { at.i += 8; continue; }
    else if (wire === 5) { at.i += 4; continue; }
    else throw new Error("unsupported wire type " + wire);
    (out[number] ||= []).push(value);
  }
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: false });
const str = (f, n) => (f[n] ? utf8.decode(f[n][0]) : "");
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
function fromBase64(s) {
  const raw = atob(s);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// --- checking one hit ----------------------------------------------------------------------
// Returns {status: "ok" | "bad" | "unsupported", reason, listing, signer}.
async function check(hit) {
  let bytes;
  try { bytes = fromBase64(hit.envelope); } catch { return { status: "bad", reason: "envelope is not base64" }; }
  const id = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
  if (id !== hit.id) return { status: "bad", reason: "id does not match the envelope" };
  let env;
  try { env = fields(bytes); } catch (e) { return { status: "bad", reason: "envelope does not decode" }; }
  const kind = Number(env[1]?.[0] ?? 0n), payload = env[2]?.[0], signer = env[3]?.[0], signature = env[4]?.[0];
  if (kind !== KIND_LISTING || !payload || signer?.length !== 32 || signature?.length !== 64) {
    return { status: "bad", reason: "not a signed listing" };
  }
  const message = new Uint8Array(DOMAIN.length + 4 + payload.length);
  message.set(DOMAIN, 0);
  new DataView(message.buffer).setUint32(DOMAIN.length, kind);
  message.set(payload, DOMAIN.length + 4);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", message));
  let valid;
  try {
    const key = await crypto.subtle.importKey("raw", signer, { name: "Ed25519" }, false, ["verify"]);
    valid = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, digest);
  } catch (e) {
    return { status: "unsupported", reason: "this browser has no Ed25519 in WebCrypto" };
  }
  if (!valid) return { status: "bad", reason: "signature does not verify" };
  let listing;
  try { listing = fields(payload); } catch { return { status: "bad", reason: "listing does not decode" }; }
  return { status: "ok", listing, signer: hex(signer) };
}

function price(listing) {
  const p = listing[7] ? fields(listing[7][0]) : {};
  const amount = p[1] ? p[1][0] : 0n;
  const currency = str(p, 2);
  const places = Number(p[3] ? p[3][0] : 0n);
  if (!currency) return "";
  const whole = amount / 10n ** BigInt(places);
  const frac = places ? "." + (amount % 10n ** BigInt(places)).toString().padStart(places, "0") : "";
  return `${whole}${frac} ${currency}`;
}

function badge(result) {
  const span = document.createElement("span");
  span.className = "badge " + (result.status === "ok" ? "ok" : "bad");
  span.textContent = result.status === "ok" ? "✓ signature verified in your browser"
    : result.status === "unsupported" ? "not checked: " + result.reason
    : "✗ " + result.reason;
  span.dataset.check = result.status;
  return span;
}

async function search(event) {
  event?.preventDefault();
  const q = $("search").value.trim();
  const list = $("results");
  list.replaceChildren();
  text("search-status", "Searching…");
  let page;
  try {
    const response = await fetch("/api/v1/listings/search?" + new URLSearchParams({ q, limit: "20" }));
    page = await response.json();
    if (!response.ok) throw new Error(page?.error?.message || response.statusText);
  } catch (e) {
    text("search-status", "Search failed: " + e.message);
    return;
  }
  let verified = 0, flagged = 0;
  for (const hit of page.hits) {
    const result = await check(hit);
    const li = document.createElement("li");
    li.dataset.id = hit.id;
    const title = document.createElement("span");
    title.className = "title";
    if (result.status === "ok") {
      verified++;
      title.textContent = str(result.listing, 4) || "(untitled)";
    } else {
      flagged++;
      title.textContent = hit.summary?.title ? `(unverified) ${hit.summary.title}` : "(unverified)";
    }
    li.append(title, badge(result));
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = result.status === "ok"
      ? [price(result.listing), str(result.listing, 14), "seller " + result.signer.slice(0, 16) + "…"].filter(Boolean).join(" · ")
      : "id " + hit.id;
    li.append(meta);
    list.append(li);
  }
  text("search-status", `${page.total} matching listings; showing ${page.hits.length}: ${verified} verified, ${flagged} flagged.`);
}

// --- health ----------------------------------------------------------------------------------
let previous = null;

function parseMetrics(body) {
  const out = { accepted: 0, rejected: 0, buckets: new Map(), count: 0 };
  for (const line of body.split("\n")) {
    if (line.startsWith("#") || !line) continue;
    const space = line.lastIndexOf(" ");
    const name = line.slice(0, space), value = Number(line.slice(space + 1));
    if (name.startsWith("souk_ingest_total{")) {
      if (name.includes('result="accepted"')) out.accepted += value;
      if (name.includes('result="rejected"')) out.rejected += value;
    } else if (name.startsWith("souk_search_seconds_bucket{")) {
      const le = /le="([^"]+)"/.exec(name)?.[1];
      if (le) out.buckets.set(le, (out.buckets.get(le) || 0) + value);
    } else if (name.startsWith("souk_search_seconds_count")) out.count += value;
  }
  return out;
}

// The upper bound of the bucket holding quantile q of the (cumulative) bucket counts.
function quantile(buckets, q) {
  const sorted = [...buckets.entries()]
    .map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), n])
    .sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return null;
  for (const [le, n] of sorted) if (n >= q * total) return le;
  return Infinity;
}

const ms = (s) => (s === null ? "—" : s === Infinity ? "> 2.5 s" : `≤ ${(s * 1000).toFixed(s < 0.01 ? 1 : 0)} ms`);

async function refresh() {
  try {
    const status = await (await fetch("/api/v1/status")).json();
    document.title = status.name + " · Souk";
    text("name", status.name);
    text("version", "version " + status.version);
    text("database", status.database);
    text("uptime", formatDuration(status.uptime_seconds));
    text("peer-id", status.peer_id || "peer-to-peer off");
    text("count-listings", status.counts.listings.toLocaleString());
    text("count-profiles", status.counts.profiles.toLocaleString());
    text("count-ratings", status.counts.ratings.toLocaleString());
    text("count-tombstones", status.counts.tombstones.toLocaleString());
    text("count-envelopes", status.counts.envelopes.toLocaleString());
    text("indexed", status.indexed_listings.toLocaleString());
  } catch (e) { text("name", "Status unavailable: " + e.message); }
  try {
    const now = parseMetrics(await (await fetch("/metrics")).text());
    const at = performance.now();
    if (previous) {
      const seconds = (at - previous.at) / 1000;
      const rate = (now.accepted - previous.metrics.accepted) / seconds;
      text("ingest-rate", `${rate.toFixed(1)} envelopes/s`);
      const window = new Map([...now.buckets].map(([le, n]) => [le, n - (previous.metrics.buckets.get(le) || 0)]));
      const recent = now.count - previous.metrics.count > 0 ? window : now.buckets;
      text("search-latency", `${ms(quantile(recent, 0.5))} / ${ms(quantile(recent, 0.99))}`);
    } else {
      text("ingest-rate", `${now.accepted.toLocaleString()} accepted since start`);
      text("search-latency", `${ms(quantile(now.buckets, 0.5))} / ${ms(quantile(now.buckets, 0.99))}`);
    }
    previous = { metrics: now, at };
  } catch (e) { text("ingest-rate", "metrics unavailable"); }
  try {
    const network = await (await fetch("/api/v1/network")).json();
    const rows = $("peers");
    rows.replaceChildren();
    rows.closest(".table-wrap").hidden = !network.enabled;
    if (!network.enabled) {
      text("network-summary", "Peer-to-peer is off on this server.");
      return;
    }
    text("network-summary", `${network.peers.length} connected peers.`);
    for (const peer of network.peers) {
      const tr = document.createElement("tr");
      const cells = [
        peer.peer_id.slice(0, 20) + "…",
        peer.latency_ms == null ? "—" : `${peer.latency_ms.toFixed(1)} ms`,
        peer.sync.state,
        peer.sync.last_sync ? new Date(peer.sync.last_sync * 1000).toLocaleTimeString() : "never",
      ];
      for (const value of cells) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.append(td);
      }
      rows.append(tr);
    }
  } catch (e) { text("network-summary", "Network status unavailable."); }
}

function formatDuration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${seconds % 60} s`;
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", search);
  refresh();
  setInterval(refresh, 5000);
});
