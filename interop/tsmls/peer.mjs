// One ts-mls member, driven by mlspy's interop tests (tests/interop/test_ts_mls.py).
//
// Requests and answers are JSON lines on stdin/stdout; bytes are hex. Every request names an
// operation ("op"); every answer is {"ok": true, ...} or {"ok": false, "error": "..."}.
//
//   keypackage {suite, identity}       -> {key_package}      an MLSMessage(KeyPackage)
//   create {group_id}                  -> {}                 a group of our own
//   add {key_package}                  -> {commit, welcome}  commit an Add (tree in the Welcome)
//   join {welcome}                     -> {}
//   commit {}                          -> {commit}           an empty commit (an UpdatePath)
//   remove {leaf}                      -> {commit}
//   send {data}                        -> {message}          an application message
//   process {message}                  -> {kind, data?}      "application", "commit", "removed"
//   state {label, context, length}     -> {epoch, epoch_authenticator, exporter}
import readline from "node:readline";
import {
  acceptAll,
  ciphersuites,
  createApplicationMessage,
  createCommit,
  createGroup,
  decodeMlsMessage,
  defaultCapabilities,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackage,
  getCiphersuiteImpl,
  getCiphersuiteFromName,
  joinGroup,
  mlsExporter,
  processMessage,
} from "ts-mls";

const hex = (b) => Buffer.from(b).toString("hex");
const bytes = (h) => new Uint8Array(Buffer.from(h, "hex"));
const text = new TextEncoder();

let impl = null; // the suite's CiphersuiteImpl
let own = null; // our KeyPackage (public and private)
let state = null; // our ClientState

function decode(h) {
  const [message] = decodeMlsMessage(bytes(h), 0);
  return message;
}

const ops = {
  async keypackage({ suite, identity }) {
    const name = Object.keys(ciphersuites).find((n) => ciphersuites[n] === suite);
    if (name === undefined) throw new Error(`ts-mls has no cipher suite ${suite}`);
    impl = await getCiphersuiteImpl(getCiphersuiteFromName(name));
    // ts-mls's default lifetime is "forever" (0 to 2^64-1), which mlspy refuses (a leaf may
    // be valid for at most five years); a month, as a client would pick.
    const now = BigInt(Math.floor(Date.now() / 1000));
    const lifetime = { notBefore: now - 3600n, notAfter: now + 30n * 86400n };
    own = await generateKeyPackage(
      { credentialType: "basic", identity: text.encode(identity) },
      defaultCapabilities(),
      lifetime,
      [],
      impl,
    );
    const message = { keyPackage: own.publicPackage, wireformat: "mls_key_package", version: "mls10" };
    return { key_package: hex(encodeMlsMessage(message)) };
  },
  async create({ group_id }) {
    state = await createGroup(bytes(group_id), own.publicPackage, own.privatePackage, [], impl);
    return {};
  },
  async add({ key_package }) {
    const proposal = { proposalType: "add", add: { keyPackage: decode(key_package).keyPackage } };
    return commitWith([proposal]);
  },
  async remove({ leaf }) {
    return commitWith([{ proposalType: "remove", remove: { removed: leaf } }]);
  },
  async commit() {
    return commitWith([]);
  },
  async join({ welcome }) {
    state = await joinGroup(decode(welcome).welcome, own.publicPackage, own.privatePackage, emptyPskIndex, impl);
    return {};
  },
  async send({ data }) {
    const out = await createApplicationMessage(state, bytes(data), impl);
    state = out.newState;
    const message = { privateMessage: out.privateMessage, wireformat: "mls_private_message", version: "mls10" };
    return { message: hex(encodeMlsMessage(message)) };
  },
  async process({ message }) {
    const result = await processMessage(decode(message), state, emptyPskIndex, acceptAll, impl);
    state = result.newState;
    if (result.kind === "applicationMessage") return { kind: "application", data: hex(result.message) };
    return { kind: state.groupActiveState.kind === "removedFromGroup" ? "removed" : "commit" };
  },
  async state({ label, context, length }) {
    const exporter = await mlsExporter(state.keySchedule.exporterSecret, label, bytes(context), length, impl);
    return {
      epoch: Number(state.groupContext.epoch),
      epoch_authenticator: hex(state.keySchedule.epochAuthenticator),
      exporter: hex(exporter),
    };
  },
};

async function commitWith(proposals) {
  const out = await createCommit({ state, cipherSuite: impl }, { extraProposals: proposals, ratchetTreeExtension: true });
  state = out.newState;
  const answer = { commit: hex(encodeMlsMessage(out.commit)) };
  if (out.welcome !== undefined) {
    answer.welcome = hex(encodeMlsMessage({ welcome: out.welcome, wireformat: "mls_welcome", version: "mls10" }));
  }
  return answer;
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    const request = JSON.parse(line);
    answer = { ok: true, ...(await ops[request.op](request)) };
  } catch (error) {
    answer = { ok: false, error: String(error && error.stack ? error.stack : error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
