/** Local ports `hoopctl connect` listens on by default, moved off the real services' ports (one source of truth: connect and its --help). */
export const DEFAULT_PORTS: Record<string, number> = { postgres: 5433, ssh: 2222, http: 8080, tcp: 9000 };

export const defaultPortsText = Object.entries(DEFAULT_PORTS).map(([t, p]) => `${t} ${p}`).join(', ');
