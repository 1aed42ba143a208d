// Build step: writes every proto under proto/ as one protobufjs JSON bundle
// (dist/protos.json), which loadProtos reads instead of parsing the .proto files.
import { writeFileSync } from "node:fs";
import { loadProtos, protoBundlePath } from "../src/protos/protos.js";

const protos = loadProtos({ fromFiles: true });
const path = protoBundlePath();
writeFileSync(path, JSON.stringify(protos.root.toJSON()));
process.stdout.write(`protos: ${protos.serviceNames.length} services -> ${path}\n`);
