// Drives toxiproxy-node-client through a few CRUD calls and prints one JSON object.
// Usage: node node_client_crud.js <toxiproxy url> <upstream host:port>
const { Toxiproxy } = require("toxiproxy-node-client");

async function main() {
  const [url, upstream] = process.argv.slice(2);
  const tp = new Toxiproxy(url);
  const out = {};
  const proxy = await tp.createProxy({ name: "node", listen: "127.0.0.1:0", upstream });
  out.created = { name: proxy.name, upstream: proxy.upstream, enabled: proxy.enabled };
  const toxic = await proxy.addToxic({ type: "latency", attributes: { latency: 25 } });
  const fetched = await proxy.getToxic(toxic.name);
  out.toxic = {
    name: fetched.name, type: fetched.type, stream: fetched.stream,
    toxicity: fetched.toxicity, attributes: fetched.attributes,
  };
  const updated = await fetched.update({ attributes: { latency: 40 } });
  out.updated_attributes = updated.attributes;
  const disabled = await proxy.update({ enabled: false });
  out.disabled = disabled.enabled;
  const populated = await tp.populate([{ name: "node2", listen: "127.0.0.1:0", upstream }]);
  out.populated = Object.keys(populated);
  out.all = Object.keys(await tp.getAll());
  try {
    await tp.get("does-not-exist");
    out.missing_error = null;
  } catch (e) {
    out.missing_error = e.message;
  }
  out.version = (await tp.getVersion()).trim();
  await tp.reset();
  await proxy.remove();
  out.after_remove = Object.keys(await tp.getAll());
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
