// Open a notebook in JupyterLab 4 in headless Chromium, run its first code cell and
// check that its output appears on the page.
//
//   node tests/e2e/lab_run_cell.mjs --url URL --screenshot FILE --user-data-dir DIR \
//        [--expect TEXT] [--timeout-ms N] [--chromium PATH]
//
// Exit 0 only when the first code cell's output area shows exactly TEXT (default "42").
// Otherwise exit 1 with a message on stderr. A screenshot is written in both cases.
// playwright-core comes from ci/e2e/node_modules (installed by ci/e2e/install.sh);
// KERNELYARD_E2E_NODE_DIR overrides that folder.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_DIR = process.env.KERNELYARD_E2E_NODE_DIR || path.resolve(HERE, "../../ci/e2e");
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-dev-shm-usage",
];

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    "user-data-dir": { type: "string" },
    expect: { type: "string", default: "42" },
    "timeout-ms": { type: "string", default: "150000" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});

function fail(message) {
  console.error(`lab_run_cell: FAILED: ${message}`);
  process.exitCode = 1;
}

const t0 = Date.now();
const log = (message) =>
  console.log(`[lab_run_cell +${((Date.now() - t0) / 1000).toFixed(1)}s] ${message}`);

if (!opts.url || !opts.screenshot || !opts["user-data-dir"]) {
  console.error("usage: lab_run_cell.mjs --url URL --screenshot FILE --user-data-dir DIR");
  process.exit(2);
}

let chromium;
try {
  ({ chromium } = createRequire(path.join(NODE_DIR, "package.json"))("playwright-core"));
} catch (e) {
  console.error(
    `lab_run_cell: playwright-core not found in ${NODE_DIR}/node_modules ` +
      `(${e.message}); run \`bash ci/e2e/install.sh\``,
  );
  process.exit(3);
}

const deadline = t0 + Number(opts["timeout-ms"]);
const left = () => Math.max(1000, deadline - Date.now());
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Close whatever JupyterLab pops up: accept the kernel chooser (the notebook names
// python3, so its default is right), answer "No" to the news prompt, close toasts,
// and dismiss any other dialog.
async function dismissPopups(page) {
  for (const dialog of await page.locator(".jp-Dialog").all()) {
    const text = ((await dialog.innerText().catch(() => "")) || "").replace(/\s+/g, " ");
    if (/kernel/i.test(text)) {
      log(`accepting dialog: ${text.slice(0, 120)}`);
      await dialog.locator(".jp-Dialog-button.jp-mod-accept").first().click({ timeout: 2000 }).catch(() => {});
    } else {
      log(`dismissing dialog: ${text.slice(0, 120)}`);
      const reject = dialog.locator(".jp-Dialog-button.jp-mod-reject");
      if (await reject.count()) {
        await reject.first().click({ timeout: 2000 }).catch(() => {});
      } else {
        await page.keyboard.press("Escape").catch(() => {});
      }
    }
  }
  for (const toast of await page.locator(".jp-Notification-Toast-Close").all()) {
    await toast.click({ timeout: 1000 }).catch(() => {});
  }
}

async function kernelStatus(page) {
  return page.evaluate(() => {
    const indicator = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator");
    return indicator ? indicator.getAttribute("data-status") : null;
  });
}

async function cellOutput(page) {
  return page.evaluate(() => {
    const cell = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell");
    if (!cell) return { found: false };
    const outputs = [...cell.querySelectorAll(".jp-OutputArea-output")].map((o) => o.innerText.trim());
    const prompt = cell.querySelector(".jp-InputArea-prompt");
    return { found: true, outputs, prompt: prompt ? prompt.innerText.trim() : "" };
  });
}

// Poll `check` (dismissing popups meanwhile) until it returns a truthy value or time is up.
async function until(page, what, check, ms) {
  const end = Math.min(deadline, Date.now() + ms);
  let last;
  while (Date.now() < end) {
    await dismissPopups(page);
    last = await check().catch((e) => `error: ${e.message}`);
    if (last === true || (last && last.ok)) return last;
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what} (last seen: ${JSON.stringify(last)})`);
}

async function run() {
  mkdirSync(path.dirname(opts.screenshot), { recursive: true });
  const context = await chromium.launchPersistentContext(opts["user-data-dir"], {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 800 },
    timeout: 60000,
  });
  const problems = [];
  let page;
  let kernelFrames = 0;
  try {
    page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    // The kernel is usable once JupyterLab's kernel websocket carries messages.
    page.on("websocket", (ws) => {
      const url = ws.url().replace(/token=[^&]+/, "token=...");
      log(`websocket opened: ${url}`);
      if (!/\/api\/kernels\/[^/]+\/channels/.test(url)) return;
      ws.on("framereceived", () => {
        kernelFrames += 1;
      });
      ws.on("close", () => log(`websocket closed: ${url}`));
    });

    log(`opening ${opts.url.replace(/token=[^&]+/, "token=...")}`);
    await page.goto(opts.url, { waitUntil: "domcontentloaded", timeout: left() });

    await until(page, "the notebook's first code cell", async () => {
      const out = await cellOutput(page);
      return out.found;
    }, 90000);
    log("notebook is open");

    const ready = await until(page, "the kernel to be connected and idle", async () => {
      const s = await kernelStatus(page);
      return { ok: s === "idle" && kernelFrames > 0, status: s, kernelFrames };
    }, 90000);
    log(`kernel status: ${ready.status}, ${ready.kernelFrames} websocket messages`);

    const expected = opts.expect;
    const hasOutput = async () => {
      const out = await cellOutput(page);
      return { ok: out.outputs.some((o) => o === expected), ...out };
    };
    const started = async () => {
      const out = await cellOutput(page);
      return { ok: out.prompt !== "[ ]:" || out.outputs.length > 0, ...out };
    };
    const cellSelector = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell";
    const runCell = async (how) => {
      await dismissPopups(page);
      await page.locator(`${cellSelector} .jp-InputArea-editor`).first().click({ timeout: 10000 });
      if (how === "toolbar") {
        await page
          .locator(".jp-NotebookPanel:not(.lm-mod-hidden) [data-command='notebook:run-cell-and-select-next']")
          .first()
          .click({ timeout: 10000 });
      } else {
        await page.keyboard.press("Shift+Enter");
      }
      log(`ran the cell (${how})`);
    };

    // Shift+Enter, as a user would; should JupyterLab not have taken it (no "[*]" or
    // execution count within a while), press it again, then use the toolbar button.
    let result;
    for (const how of ["keyboard", "keyboard", "toolbar"]) {
      await runCell(how);
      try {
        await until(page, "the cell to start running", started, 15000);
      } catch (e) {
        log(e.message);
        continue;
      }
      result = await until(page, `output ${JSON.stringify(expected)}`, hasOutput, 60000);
      break;
    }
    if (!result) throw new Error("JupyterLab did not run the cell (keyboard and toolbar tried)");
    log(`cell output: ${JSON.stringify(result.outputs)} prompt ${result.prompt}`);
    // Let the kernel go idle again so the screenshot shows the finished state.
    await until(page, "the kernel to be idle after the run", async () => (await kernelStatus(page)) === "idle", 30000)
      .catch((e) => log(e.message));
    await page.mouse.move(5, 5);
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    log(`screenshot: ${opts.screenshot}`);
    console.log(`RESULT ${JSON.stringify({ output: expected, outputs: result.outputs })}`);
  } catch (e) {
    if (page) {
      await page.screenshot({ path: opts.screenshot, fullPage: true }).catch(() => {});
      const out = await cellOutput(page).catch(() => null);
      const body = await page.evaluate(() => document.body.innerText.slice(0, 2000)).catch(() => "");
      console.error(`cell: ${JSON.stringify(out)}\npage text:\n${body}`);
    }
    if (problems.length) console.error(`browser errors:\n  ${problems.join("\n  ")}`);
    fail(e.message);
  } finally {
    await context.close().catch(() => {});
  }
}

const watchdog = setTimeout(() => {
  fail(`no result within ${opts["timeout-ms"]} ms`);
  process.exit(1);
}, Number(opts["timeout-ms"]) + 30000);
watchdog.unref();

await run();
