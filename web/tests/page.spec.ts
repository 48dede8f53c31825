// A new user's whole visit, in a real browser against a real gateway, real
// Synapse and a webhook receiver (set up by tests/tests/web.rs): register,
// bind both networks (a wrong password first), change the signature once and
// watch both rows turn delivered, choose an avatar above the limits and see
// what will be converted, follow a file upload from a second browser
// (another device) from 10 to 11, and the handoff log. Screenshots of every
// page at desktop and phone sizes go to SCREENSHOT_DIR.
import AxeBuilder from "@axe-core/playwright";
import { expect, test, type Browser, type Page } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/tests/web.rs`);
  return value;
};
const USER = "alice";
const PASSWORD = "correct horse battery";
const SHOTS = process.env.SCREENSHOT_DIR ?? "screenshots";
mkdirSync(SHOTS, { recursive: true });

test.describe.configure({ mode: "serial" });

/** Fails the test on any CSP violation or page error, and collects every URL requested. */
function watch(page: Page): { urls: string[]; problems: string[] } {
  const seen = { urls: [] as string[], problems: [] as string[] };
  page.on("request", (r) => seen.urls.push(r.url()));
  page.on("pageerror", (e) => seen.problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content.Security.Policy|Refused to/i.test(m.text())) seen.problems.push(m.text());
  });
  return seen;
}

/** Accessibility rules (WCAG 2 A and AA: labels, contrast, roles) broken on any page shot. */
const inaccessible: string[] = [];

async function shoot(page: Page, name: string) {
  const audit = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  for (const v of audit.violations)
    inaccessible.push(`${name}: ${v.id} (${v.help}) at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  await page.screenshot({ path: join(SHOTS, `${name}-desktop.png`), fullPage: true });
  const size = page.viewportSize()!;
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(SHOTS, `${name}-phone.png`), fullPage: true });
  // Nothing wider than a phone: no sideways scrolling.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 390) inaccessible.push(`${name}: ${width} px wide on a 390 px phone`);
  await page.setViewportSize(size);
}

async function go(page: Page, section: string) {
  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: section }).click();
  await expect(page.getByRole("heading", { level: 1, name: section })).toBeVisible();
}

async function logIn(browser: Browser): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto("/");
  await page.getByLabel("User name").fill(USER);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByLabel("Password").press("Enter");
  await expect(page.getByTestId("inbox-state")).toHaveText("live");
  return page;
}

let page: Page;
let seen: ReturnType<typeof watch>;

/** Opens the bind form of the network named `name` with `account` filled in; its card. */
async function bindForm(name: string, account: string) {
  const card = page.getByRole("listitem").filter({ has: page.getByRole("heading", { name }) });
  await card.getByRole("button", { name: /Bind a/ }).click();
  await card.getByLabel("Account", { exact: true }).fill(account);
  return card;
}

test("register with the keyboard, and a clear error for a taken name", async ({ browser }) => {
  page = await (await browser.newContext()).newPage();
  seen = watch(page);
  const response = await page.goto("/");
  const csp = response!.headers()["content-security-policy"];
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain("unsafe-inline");
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
  await shoot(page, "login");
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("User name").fill(USER);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByLabel("Password").press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Change once" })).toBeVisible();
  await expect(page.getByTestId("inbox-state")).toHaveText("live");

  // The same name again, from another browser: the API's reason, shown.
  const other = await (await browser.newContext()).newPage();
  await other.goto("/");
  await other.getByRole("button", { name: "Create an account" }).click();
  await other.getByLabel("User name").fill(USER);
  await other.getByLabel("Password").fill(PASSWORD);
  await other.getByRole("button", { name: "Create account" }).click();
  await expect(other.getByRole("alert")).toContainText("taken");
  await other.context().close();
});

test("bind the webhook network and a real Synapse account; a wrong password shows the connector's error", async () => {
  await go(page, "Networks");
  const webhook = await bindForm(env("WEBHOOK_NAME"), "alice-phone");
  await webhook.getByRole("button", { name: "Bind", exact: true }).click();
  await expect(page.getByTestId("bindings")).toContainText("alice-phone");

  const matrix = await bindForm("Matrix", env("MATRIX_ACCOUNT"));
  await expect(matrix).toContainText("avatar ≤ 1024px");
  await matrix.getByLabel("Password (optional)").fill("not her password");
  await matrix.getByRole("button", { name: "Bind", exact: true }).click();
  await expect(matrix.getByRole("alert")).toContainText("M_FORBIDDEN");
  await expect(page.getByTestId("bindings")).not.toContainText(env("MATRIX_ACCOUNT"));

  await matrix.getByLabel("Password (optional)").fill(env("MATRIX_PASSWORD"));
  await matrix.getByRole("button", { name: "Bind", exact: true }).click();
  await expect(page.getByTestId("bindings")).toContainText(env("MATRIX_ACCOUNT"));
  await shoot(page, "networks");
});

test("change the signature once and watch both networks' rows turn delivered", async () => {
  await go(page, "Change once");
  await expect(page.getByTestId("limits")).toContainText(
    `${env("WEBHOOK_NAME")}: signature ≤ 1000 chars · mood ≤ 100 chars · avatar ≤ 1024px, ≤ 1 MiB, PNG/JPEG`,
  );
  await page.getByLabel("Signature").fill(env("SIGNATURE"));
  await page.getByRole("button", { name: "Send to every network" }).click();
  const delivery = page.getByTestId("delivery");
  await expect(delivery.getByTestId(`target-${env("WEBHOOK_MODULE")}`).getByTestId("target-status")).toHaveText("delivered");
  await expect(delivery.getByTestId("target-matrix").getByTestId("target-status")).toHaveText("delivered");
  await expect(delivery.getByTestId("target-matrix")).toContainText("applied: signature");
  await expect(page.getByTestId("change-status")).toHaveText("delivered");
  await expect(page.getByTestId("history")).toContainText(env("SIGNATURE"));
  await shoot(page, "change");
});

test("an avatar above the limits shows what will be transcoded, then lands converted", async () => {
  await page.getByLabel("Avatar").setInputFiles(env("BIG_AVATAR"));
  const plans = page.getByTestId("avatar-plans");
  await expect(page.getByTestId("avatar-facts")).toContainText("1600×1200");
  await expect(plans.locator('[data-module="matrix"]')).toContainText("scaled down from 1600×1200 to at most 1024×768");
  const hook = plans.locator(`[data-module="${env("WEBHOOK_MODULE")}"]`);
  await expect(hook).toContainText("scaled down");
  await expect(hook).toContainText("re-encoded from");
  await expect(hook).toContainText("to at most 1 MiB");
  await shoot(page, "avatar");
  await page.getByRole("button", { name: "Send to every network" }).click();
  const delivery = page.getByTestId("delivery");
  const matrixRow = delivery.getByTestId("target-matrix");
  await expect(matrixRow.getByTestId("target-status")).toHaveText("delivered");
  await expect(matrixRow).toContainText("cut or converted to fit: avatar");
  await expect(delivery.getByTestId(`target-${env("WEBHOOK_MODULE")}`).getByTestId("target-status")).toHaveText("delivered");

  // The avatar went with that change: the next one carries only what the user changed.
  await expect(page.getByTestId("avatar-facts")).toHaveCount(0);
  await expect(page.getByLabel("Avatar")).toHaveValue("");
  await page.getByLabel("Mood", { exact: true }).fill("calm");
  await page.getByRole("button", { name: "Send to every network" }).click();
  await expect(page.getByTestId("delivery")).toContainText("mood “calm”");
  await expect(page.getByTestId("delivery")).not.toContainText("a new avatar");
  await expect(page.getByTestId(`target-${env("WEBHOOK_MODULE")}`).getByTestId("target-status")).toHaveText("delivered");
});

test("a network that fails shows retrying with the reason, then failed; unbinding it", async () => {
  await go(page, "Networks");
  const flaky = await bindForm(env("FLAKY_NAME"), "alice-flaky");
  await flaky.getByRole("button", { name: "Bind", exact: true }).click();
  await expect(page.getByTestId("bindings")).toContainText("alice-flaky");

  await go(page, "Change once");
  await page.getByLabel("Mood", { exact: true }).fill("busy");
  await expect(page.locator('.plans [data-module="matrix"]')).toContainText("does not take a mood: not sent");
  await page.getByRole("button", { name: "Send to every network" }).click();
  const delivery = page.getByTestId("delivery");
  const row = delivery.getByTestId(`target-${env("FLAKY_MODULE")}`);
  await expect(row.getByTestId("target-status")).toHaveText("retrying");
  await expect(row).toContainText("next try");
  await expect(row.locator(".warn").first()).not.toBeEmpty();
  await shoot(page, "retrying");
  await expect(delivery.getByTestId(`target-${env("WEBHOOK_MODULE")}`).getByTestId("target-status")).toHaveText("delivered");
  await expect(row.getByTestId("target-status")).toHaveText("failed");
  await expect(row).toContainText("HTTP 500");
  await expect(row).toContainText("given up");
  await expect(page.getByTestId("change-status")).toHaveText("partly delivered");
  // Only what differs from the last change is sent: nothing, here.
  await page.getByRole("button", { name: "Send to every network" }).click();
  await expect(page.locator("form.change").getByRole("alert")).toContainText("Nothing changed");

  await go(page, "Networks");
  page.once("dialog", (d) => void d.accept());
  await page.getByRole("button", { name: `Unbind alice-flaky on ${env("FLAKY_NAME")}` }).click();
  await expect(page.getByTestId("bindings")).not.toContainText("alice-flaky");
});

test("this browser is an active device", async () => {
  await go(page, "Devices");
  const devices = page.getByTestId("devices");
  await expect(devices.getByRole("listitem").filter({ hasText: "(this browser)" })).toContainText("active");
  await shoot(page, "devices");
});

test("a file upload shows 10 then 11 on a second browser, which may download it only once whole", async ({ browser }) => {
  const other = await logIn(browser);
  await go(other, "Files");
  await go(page, "Files");

  // A slow link, made deterministic: the second chunk waits until released.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let patches = 0;
  await page.route(/\/v1\/services\/files\/uploads\/.+/, async (route) => {
    if (route.request().method() === "PATCH" && ++patches === 2) await gate;
    await route.continue();
  });
  const bytes = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
  await page
    .getByLabel("Choose files to share with your devices")
    .setInputFiles({ name: "notes.bin", mimeType: "application/octet-stream", buffer: bytes });

  const row = other.locator('tr[data-file="notes.bin"]');
  await expect(row.getByTestId("file-status")).toHaveText("10");
  await row.getByRole("button", { name: "Download notes.bin" }).click();
  await expect(row.getByTestId("download-refused")).toContainText("uploading");
  await expect(page.getByTestId("upload")).toContainText("uploading (1 MiB of 3 MiB)");
  await shoot(page, "files-uploading");

  release();
  await expect(row.getByTestId("file-status")).toHaveText("11");
  await expect(row.getByTestId("file-trail")).toContainText("10 → 11");
  await expect(row.getByTestId("download-refused")).toHaveCount(0);
  await expect(page.getByTestId("upload")).toContainText("uploaded");
  const download = other.waitForEvent("download");
  await row.getByRole("button", { name: "Download notes.bin" }).click();
  const file = await download;
  expect(file.suggestedFilename()).toBe("notes.bin");
  const got = await readFile(await file.path());
  expect(got.equals(bytes)).toBe(true);
  await shoot(other, "files");
  await other.context().close();
});

test("handoff sessions with their log", async ({ playwright }) => {
  // Another terminal of the user opens a session and pushes it to this browser.
  const api = await playwright.request.newContext({ baseURL: env("GATEWAY_URL") });
  const { token } = await (await api.post("/v1/sessions", { data: { username: USER, password: PASSWORD } })).json();
  const laptop = await (
    await api.post("/v1/devices", { data: { id: "alice-laptop-web-test", name: "Laptop" }, headers: { authorization: `Bearer ${token}` } })
  ).json();
  const auth = { authorization: `Bearer ${laptop.token}` };
  const opened = await (
    await api.post("/v1/services/handoff/sessions", { data: { app: "org.example.editor", state: { line: 42 } }, headers: auth })
  ).json();
  const me = await page.evaluate((user) => localStorage.getItem(`gateway.device_id.${user}`), USER);
  const offer = await api.post(`/v1/services/handoff/sessions/${opened.id}/switch`, { data: { to: me }, headers: auth });
  expect(offer.status()).toBe(202);

  await go(page, "Handoff");
  const session = page.getByTestId("handoff-sessions").getByRole("listitem").filter({ hasText: "org.example.editor" });
  await expect(session).toContainText("held by Laptop");
  await session.getByRole("button", { name: "Show log" }).click();
  const log = page.getByTestId("handoff-log");
  await expect(log).toContainText("Laptop: opened");
  await expect(log).toContainText("offered to Chromium on a computer");
  await shoot(page, "handoff");

  // The offer reached this browser live: accepting it moves the session here.
  const offered = page.getByTestId("offer").filter({ hasText: "org.example.editor" });
  await offered.getByRole("button", { name: "Accept" }).click();
  await expect(page.getByText("This browser now holds")).toBeVisible();
  await expect(session).toContainText("held by Chromium on a computer");
  await expect(log).toContainText("accepted");
  await api.dispose();
});

test("the token never went into a URL, and the page broke no CSP rule", async () => {
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem("gateway.session")!).token as string);
  expect(token.length).toBeGreaterThan(10);
  expect(seen.urls.filter((u) => u.includes(token))).toEqual([]);
  expect(seen.urls.every((u) => u.startsWith(env("GATEWAY_URL")) || u.startsWith("blob:") || u.startsWith("data:"))).toBe(true);
  expect(seen.problems).toEqual([]);
  expect(inaccessible).toEqual([]);
});

test("the keyboard reaches everything: skip link, sections", async () => {
  await page.goto("/");
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Skip to content" })).toBeFocused();
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Networks" })).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Networks" })).toBeVisible();
  // The skip link moves the focus to the content and stays in the section.
  await page.getByRole("link", { name: "Skip to content" }).focus();
  await page.keyboard.press("Enter");
  await expect(page.locator("main")).toBeFocused();
  await expect(page.getByRole("heading", { level: 1, name: "Networks" })).toBeVisible();
});

test("log out ends the token; another user then signs in on the same browser", async () => {
  const old = await page.evaluate(() => JSON.parse(localStorage.getItem("gateway.session")!).token as string);
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
  const status = await page.evaluate(async (t) => (await fetch("/v1/profile", { headers: { authorization: `Bearer ${t}` } })).status, old);
  expect(status).toBe(401);

  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("User name").fill("bob");
  await page.getByLabel("Password").fill("bob's own password");
  await page.getByLabel("Password").press("Enter");
  await expect(page.getByTestId("inbox-state")).toHaveText("live");
  await go(page, "Networks");
  await expect(page.getByText("No account bound yet")).toBeVisible();
  await go(page, "Devices");
  await expect(page.getByTestId("devices").getByRole("listitem")).toHaveCount(1);
});
