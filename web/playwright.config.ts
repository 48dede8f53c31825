// Browser tests of the page, driving the machine's Chromium (Debian's
// `chromium` package; CHROMIUM overrides the path). They are started by the
// Rust test `tests/tests/web.rs`, which brings up the gateway, a real
// Synapse and a webhook receiver, and passes their addresses in the
// environment (GATEWAY_URL, MATRIX_ACCOUNT, ...).
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "tests",
  timeout: 180_000,
  expect: { timeout: 30_000 },
  workers: 1,
  retries: 0,
  forbidOnly: true,
  reporter: [["list"]],
  outputDir: process.env.PLAYWRIGHT_OUTPUT ?? "test-results",
  use: {
    baseURL: process.env.GATEWAY_URL,
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: ["--no-sandbox"],
    },
    viewport: { width: 1280, height: 860 },
    trace: "retain-on-failure",
  },
});
