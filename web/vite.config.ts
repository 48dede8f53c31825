import { defineConfig } from "vite";

// The page is embedded in the gateway binary and served at `/` under a strict
// Content-Security-Policy (script-src 'self', style-src 'self'): no inline
// scripts or styles, no external hosts, hashed asset names under /assets/.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
});
