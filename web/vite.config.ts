import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// Served by inventoryd at /console/ (embedded at build time); `npm run dev`
// proxies the API to a local inventoryd on :8080.
export default defineConfig({
  base: "/console/",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8080",
      "/metrics": "http://127.0.0.1:8080",
      "/readyz": "http://127.0.0.1:8080",
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
