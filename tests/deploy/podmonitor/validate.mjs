// Validate PodMonitor documents (JSON, one array on stdin) against the prometheus-operator's
// CRD schema as @kubernetes-models/prometheus-operator compiles it.
// Usage: node validate.mjs NODE_MODULES_DIR < docs.json; prints one line per document,
// exits 1 when any is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const file = join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js");
const { PodMonitor } = await import(pathToFileURL(file).href);
const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const doc of docs) {
  try {
    new PodMonitor(doc).validate();
    console.log(`ok ${doc.metadata.name}`);
  } catch (error) {
    failed = true;
    console.log(`invalid ${doc.metadata?.name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
