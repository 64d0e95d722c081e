// Validate glTF/GLB files with the Khronos glTF validator and print one JSON report per line:
//   node tools/gltf-validator/validate.mjs take/face0.glb
// Exit code: 0 when no file has errors, 1 when any has, 2 when the validator is not installed
// (run `npm install --prefix tools/gltf-validator` first).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename } from "node:path";

const require = createRequire(import.meta.url);
let validator;
try {
  validator = require("gltf-validator");
} catch (err) {
  console.error("gltf-validator is not installed: npm install --prefix tools/gltf-validator");
  process.exit(2);
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), {
    uri: basename(file),
    maxIssues: 50,
  });
  const issues = report.issues;
  if (issues.numErrors > 0) failed = true;
  console.log(JSON.stringify({
    file,
    validatorVersion: report.validatorVersion,
    numErrors: issues.numErrors,
    numWarnings: issues.numWarnings,
    numInfos: issues.numInfos,
    numHints: issues.numHints,
    messages: issues.messages,
    info: report.info,
  }));
}
process.exit(failed ? 1 : 0);
