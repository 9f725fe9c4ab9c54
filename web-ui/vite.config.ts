import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` proxies the API to a running `weft serve` (default 127.0.0.1:8188).
const server = process.env.WEFT_SERVER ?? 'http://127.0.0.1:8188';

export default defineConfig({
  plugins: [react()],
  base: './',
  build: { outDir: 'dist', sourcemap: process.env.WEFT_SOURCEMAP === "1", chunkSizeWarningLimit: 800 },
  server: {
    proxy: {
      // weft serve checks Host and Origin: the proxy speaks as the server's own origin.
      '/api': { target: server, changeOrigin: true, headers: { origin: server } },
      '/ws': { target: server.replace(/^http/, 'ws'), ws: true, changeOrigin: true, headers: { origin: server } },
    },
  },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
