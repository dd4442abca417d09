import { useEffect, useRef } from "react";
import { href, useRoute } from "./lib/route";
import { useSession } from "./lib/session";
import { HealthPage } from "./pages/Health";
import { OperationsPage } from "./pages/Operations";
import { OrderPage } from "./pages/Order";
import { ReservePage } from "./pages/Reserve";
import { SignInPage } from "./pages/SignIn";
import { StockPage } from "./pages/Stock";

const PAGES = [
  { page: "stock", title: "Stock" },
  { page: "reserve", title: "Reserve" },
  { page: "order", title: "Order" },
  { page: "ops", title: "Operations" },
  { page: "health", title: "Health" },
  { page: "sign-in", title: "Sign in" },
] as const;

export function App() {
  const route = useRoute();
  const session = useSession();
  const main = useRef<HTMLElement>(null);
  const current = PAGES.find((p) => p.page === route.page) ?? PAGES[0];
  const title = (page: (typeof PAGES)[number]) => (page.page === "sign-in" && session.token ? "Account" : page.title);

  useEffect(() => {
    document.title = `${title(current)} · Inventory console`;
    main.current?.focus();
    // The title follows the page and whether a token is held.
  }, [current, session.token]);

  return (
    <>
      <a className="skip" href="#main" onClick={(e) => (e.preventDefault(), main.current?.focus())}>
        Skip to content
      </a>
      <header className="top">
        <span className="brand">Inventory</span>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p.page} href={href(p.page)} aria-current={p === current ? "page" : undefined}>
              {title(p)}
            </a>
          ))}
        </nav>
        <span className="who" data-testid="identity">
          {session.token ? `${session.identity ?? "?"} (token)` : session.operator ? `${session.operator} (X-Operator)` : "not signed in"}
        </span>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        <h1>{title(current)}</h1>
        {current.page === "stock" && <StockPage sku={route.params[0]} />}
        {current.page === "reserve" && <ReservePage />}
        {current.page === "order" && <OrderPage orderId={route.params[0]} />}
        {current.page === "ops" && <OperationsPage />}
        {current.page === "health" && <HealthPage />}
        {current.page === "sign-in" && <SignInPage />}
      </main>
    </>
  );
}
