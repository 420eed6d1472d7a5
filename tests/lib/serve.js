// Serve tests/pages: `node tests/lib/serve.js PORT [HOST]` (HOST defaults to 127.0.0.1). Used by scripts/run.sh for the
// demo page; the tests start the same server in-process through the harness.
import { createServer } from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PAGES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../pages');

export function pageServer() {
  return createServer((req, res) => {
    const name = path.basename(new URL(req.url, 'http://x').pathname) || 'demo.html';
    const file = path.join(PAGES, name);
    if (!fs.existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(fs.readFileSync(file));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 4480);
  const host = process.argv[3] ?? '127.0.0.1';
  const server = pageServer();
  server.on('error', (e) => {
    console.error(`page server: ${e.message}`);
    process.exit(1);
  });
  server.listen(port, host, () => console.log(`serving ${PAGES} on http://${host}:${port}/`));
  process.on('SIGTERM', () => process.exit(0));
}
