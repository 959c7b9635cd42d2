// Validates the custom resources of deploy/kubernetes (KEDA, Prometheus operator) against
// the schemas @kubernetes-models ships, offline. Usage: node validate.mjs FILE.yaml...
// Prints one line per custom resource; built-in resources (kubernetes-validate checks them)
// are skipped. Exits 1 if any is invalid or of a kind of these groups it does not know.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

const groups = new Set(Object.keys(models).map((key) => key.split("/")[0]));

let failed = false;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const data = doc.toJS();
    if (!data) continue;
    const key = `${data.apiVersion}/${data.kind}`;
    if (!groups.has(String(data.apiVersion).split("/")[0])) continue;
    const Model = models[key];
    if (!Model) {
      console.log(`${file}: ${key}: no schema known`);
      failed = true;
      continue;
    }
    try {
      new Model(data).validate();
      console.log(`${file}: ${key} ${data.metadata?.name}: valid`);
    } catch (error) {
      console.log(`${file}: ${key} ${data.metadata?.name}: ${error.message}`);
      failed = true;
    }
  }
}
process.exit(failed ? 1 : 0);
