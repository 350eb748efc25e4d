export default async function mcp(): Promise<number> { return 2; }
