/**
 * The VS Code client of the policy language server: starts `policyengine lsp` (the command set in
 * `policyengine.executable`, arguments in `policyengine.args`) over stdio for `.policy` documents
 * and forwards everything else to it: diagnostics, hover, definition, completion, formatting and the
 * code lenses that run a rule's `.tests.yaml` examples (`policyengine.runRuleTests`).
 * It holds no policy knowledge of its own: the server is the single source of truth.
 */
import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;

/** The server command from the settings: the executable and its arguments (default `policyengine lsp`). */
export function serverCommand(config: vscode.WorkspaceConfiguration): { command: string; args: string[] } {
  const command = (config.get<string>("executable") || "policyengine").trim() || "policyengine";
  const args = config.get<string[]>("args") ?? ["lsp"];
  return { command, args: args.length > 0 ? args : ["lsp"] };
}

function makeClient(): LanguageClient {
  const { command, args } = serverCommand(vscode.workspace.getConfiguration("policyengine"));
  const run = { command, args, transport: TransportKind.stdio };
  const serverOptions: ServerOptions = { run, debug: run };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "policy" }, { scheme: "untitled", language: "policy" }],
    synchronize: {
      // the server reads the .tests.yaml files next to a policy: tell it when they change
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.{policy,tests.yaml}"),
    },
  };
  return new LanguageClient("policyengine", "policyengine language server", serverOptions, clientOptions);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  client = makeClient();
  context.subscriptions.push(
    vscode.commands.registerCommand("policyengine.restartServer", async () => {
      if (client) {
        await client.stop();
      }
      client = makeClient();
      await client.start();
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("policyengine")) {
        await vscode.commands.executeCommand("policyengine.restartServer");
      }
    }),
  );
  try {
    await client.start();
  } catch (err) {
    const { command } = serverCommand(vscode.workspace.getConfiguration("policyengine"));
    void vscode.window.showErrorMessage(
      `policyengine: could not start \`${command} lsp\` (${String(err)}). ` +
        "Install it with pip install 'policyengine-llm[lsp]' or set policyengine.executable.",
    );
  }
}

export async function deactivate(): Promise<void> {
  if (client) {
    await client.stop();
    client = undefined;
  }
}
