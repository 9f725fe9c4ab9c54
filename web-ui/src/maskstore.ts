// Which LoadImage node the mask painter is open on (a node's button and the context menu open it).
import { create } from 'zustand';

export const useMaskStore = create<{ node: string | null }>()(() => ({ node: null }));

export function openMaskEditor(node: string) {
  useMaskStore.setState({ node });
}

export function closeMaskEditor() {
  useMaskStore.setState({ node: null });
}
