// Reads a .env text on stdin with Node's dotenv package, installed under the directory given as
// the first argument (scripts/ci-client-deps puts it there), and prints what it read as JSON.
const path = require('path');
const dotenv = require(path.join(process.argv[2], 'node_modules', 'dotenv'));
const text = require('fs').readFileSync(0, 'utf8');
process.stdout.write(JSON.stringify(dotenv.parse(text)));
