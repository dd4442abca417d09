// The console's pages live in the URL's hash (#/stock, #/order/o-1), so any
// path under /console/ loads the same page and the service needs no routes
// of its own for them.
import { useEffect, useState } from "react";

export interface Route {
  page: string;
  /** What follows the page: `#/order/o-1` → ["o-1"]. */
  params: string[];
}

export function parseHash(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] ?? "stock", params: parts.slice(1) };
}

export function href(page: string, ...params: string[]): string {
  return `#/${[page, ...params.map(encodeURIComponent)].join("/")}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseHash(window.location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}
