// Writes dist/index.js with durations computed by the "ms" dependency at build time.
const fs = require("fs");
const ms = require("ms");
const table = Object.fromEntries(["1s", "2m", "3h", "4d"].map((d) => [d, ms(d)]));
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.js", `module.exports = ${JSON.stringify(table)};\n`);
