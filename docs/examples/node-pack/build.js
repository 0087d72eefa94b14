// Writes dist/index.js from src/greeting.txt: a build step without dependencies.
const fs = require("fs");
const text = fs.readFileSync("src/greeting.txt", "utf8").trim();
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.js", `module.exports = () => ${JSON.stringify(text)};\n`);
